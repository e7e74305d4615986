package main

import (
	"fmt"
	"io"
	"regexp"
	"strings"
)

// versionUsage is --version's usage: a command, not a setting.
const versionUsage = "print the version, revision and Go version, and exit"

// zeroAndNegative is the rule every duration and limit follows, said once
// for -h and the README.
const zeroAndNegative = "On every duration and limit, 0 means the default and a negative value means none " +
	"(no limit, no timeout, off), where the setting says what none is; elsewhere a negative value is refused."

// envRule says how a setting's environment variable is named.
var envRule = "Every setting is a flag with an environment variable behind it, `" + envPrefix +
	"` and the flag's name in upper case with `_` for `-` (`--max-streams`: `" + envName("max-streams") +
	"`); the flag wins when both are set."

// defaultText is how the default of s shows in def, the configuration
// with every setting at its default, in Markdown; "" for none.
func defaultText(s setting, def *config) string {
	if s.def != "" {
		return s.def
	}
	text := show(s.field(def))
	if sign, number := sign(s.field(def)); number && sign == 0 && s.off != "" {
		return s.off // a zero default means none: show which
	}
	if text == "" {
		return ""
	}
	return "`" + text + "`"
}

// meaning is s's usage with what a negative value means, in Markdown.
func meaning(s setting) string {
	if s.off == "" {
		return s.usage
	}
	return s.usage + " (negative: " + s.off + ")"
}

// markdownLink is a Markdown link, [text](target).
var markdownLink = regexp.MustCompile(`\[([^\]]*)\]\(([^)]*)\)`)

// plain is Markdown text as a terminal shows it: links as their text and
// target, no backticks.
func plain(md string) string {
	md = markdownLink.ReplaceAllStringFunc(md, func(link string) string {
		m := markdownLink.FindStringSubmatch(link)
		if m[1] == m[2] {
			return m[1]
		}
		return m[1] + " (" + m[2] + ")"
	})
	return strings.ReplaceAll(md, "`", "")
}

// writeUsage is -h: every setting with its environment variable and its
// default in def.
func writeUsage(w io.Writer, def *config) {
	fmt.Fprintf(w, "Usage: speech-gateway [flags]\n\n"+
		"Streaming TTS and STT over gRPC, backed by SLNG. The SLNG key comes from %s\n"+
		"or the file --slng-api-key-file names; --dev needs none.\n\n%s\n%s\n\n",
		envName("slng-api-key"), wrap(plain(envRule), 100, ""), wrap(plain(zeroAndNegative), 100, ""))
	fmt.Fprintf(w, "  --version\n%s\n", wrap(versionUsage, 100, "        "))
	for _, s := range settings {
		name := "--" + s.name
		if s.envOnly {
			name = "(environment only)"
		}
		fmt.Fprintf(w, "  %s  [%s]\n", name, envName(s.name))
		var notes []string
		if d := defaultText(s, def); d != "" {
			notes = append(notes, "default "+d)
		}
		if s.off != "" {
			notes = append(notes, "negative: "+s.off)
		}
		text := s.usage
		if len(notes) > 0 {
			text += " (" + strings.Join(notes, "; ") + ")"
		}
		fmt.Fprintln(w, wrap(plain(text), 100, "        "))
	}
}

// wrap breaks text into lines of at most width runes, each starting with
// indent.
func wrap(text string, width int, indent string) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	b.WriteString(line)
	return b.String()
}

// readmeTable is the README's configuration table: a row per setting, with
// its environment variable and its default in def.
func readmeTable(def *config) string {
	var b strings.Builder
	b.WriteString("| flag | environment | default | meaning |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| `--version` | | | %s |\n", versionUsage)
	for _, s := range settings {
		flagCol := "`--" + s.name + "`"
		if s.envOnly {
			flagCol = ""
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s |\n", flagCol, envName(s.name), defaultText(s, def), meaning(s))
	}
	return b.String()
}

// renamedTable lists the environment variables read before the gateway's
// names followed one rule, each with its name now, for docs/operations.md.
func renamedTable() string {
	var b strings.Builder
	b.WriteString("| before | now |\n|---|---|\n")
	for _, s := range settings {
		if s.old != "" {
			fmt.Fprintf(&b, "| `%s` | `%s` |\n", s.old, envName(s.name))
		}
	}
	return b.String()
}
