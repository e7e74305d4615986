package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// modelKinds are --kind's values.
var modelKinds = map[string]speechv1.ModelKind{
	"":    speechv1.ModelKind_MODEL_KIND_UNSPECIFIED,
	"tts": speechv1.ModelKind_MODEL_KIND_TTS,
	"stt": speechv1.ModelKind_MODEL_KIND_STT,
}

// models prints the catalogued models the caller may use, one a line.
func models(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := flags("models", stderr, 10*time.Second)
	kind := fs.String("kind", "", "tts or stt; empty lists both")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	k, ok := modelKinds[*kind]
	if !ok || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "speechctl models: --kind is tts or stt, and no argument follows")
		return errUsage
	}
	conn, ctx, done, err := cf.connect(ctx)
	if err != nil {
		return err
	}
	defer done()
	resp, err := speechv1.NewCatalogServiceClient(conn).ListModels(ctx, &speechv1.ListModelsRequest{Kind: k})
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "MODEL\tKIND\tVOICES\tENCODINGS\tRATES (kHz)\tSENDS")
	for _, m := range resp.GetModels() {
		id := m.GetModel()
		if m.GetGatewayDefault() {
			id += " (default)"
		}
		var encs []string
		for _, e := range m.GetEncodings() {
			encs = append(encs, strings.ToLower(strings.TrimPrefix(e.String(), "AUDIO_ENCODING_")))
		}
		var rates []string
		for _, r := range m.GetSampleRatesHz() {
			rates = append(rates, strconv.FormatFloat(float64(r)/1000, 'f', -1, 64))
		}
		voices := "-"
		if m.GetKind() == speechv1.ModelKind_MODEL_KIND_TTS {
			voices = listed(strconv.Itoa(len(m.GetVoices())), m.GetVoicesComplete())
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", id, strings.ToLower(strings.TrimPrefix(m.GetKind().String(), "MODEL_KIND_")), voices,
			listed(strings.Join(encs, ","), m.GetEncodingsComplete()), listed(strings.Join(rates, ","), m.GetSampleRatesComplete()), sends(m.GetSends()))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%d models; + marks a list that may be incomplete (SLNG decides about the rest); "+
		"speechctl voices MODEL lists a model's voices\n", len(resp.GetModels()))
	return nil
}

// listed is a list for the table: "?" when nothing is known, with a "+"
// when more may exist.
func listed(s string, complete bool) string {
	switch {
	case s == "" || (s == "0" && !complete):
		return "?"
	case !complete:
		return s + "+"
	}
	return s
}

// sends names what a model's route is known to send.
func sends(s *speechv1.ModelSends) string {
	var out []string
	for _, f := range []struct {
		name string
		sent speechv1.Sent
	}{{"partials", s.GetPartials()}, {"utterance_end", s.GetUtteranceEnd()}, {"timings", s.GetTimings()}} {
		if f.sent == speechv1.Sent_SENT_YES {
			out = append(out, f.name)
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ",")
}

// voices prints a model's catalogued voices, one a line.
func voices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := flags("voices", stderr, 10*time.Second)
	language := fs.String("language", "", "only voices for this language, e.g. en or en-US")
	// The model may come before the flags or after them.
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	var model string
	if fs.NArg() > 0 {
		model = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return errUsage
		}
	}
	if model == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "speechctl voices: name one model, e.g. speechctl voices deepgram/aura:2 (speechctl models lists them)")
		return errUsage
	}
	conn, ctx, done, err := cf.connect(ctx)
	if err != nil {
		return err
	}
	defer done()
	resp, err := speechv1.NewCatalogServiceClient(conn).ListVoices(ctx, &speechv1.ListVoicesRequest{Model: model, Language: *language})
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VOICE\tNAME\tLANGUAGE")
	for _, v := range resp.GetVoices() {
		fmt.Fprintf(w, "%s\t%s\t%s\n", v.GetVoiceId(), orDash(v.GetDisplayName()), orDash(v.GetLanguage()))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if resp.GetComplete() {
		fmt.Fprintf(stderr, "%d voices: every voice the model offers\n", len(resp.GetVoices()))
	} else {
		fmt.Fprintf(stderr, "%d voices listed; the model may offer others, which the gateway passes to SLNG unchecked\n", len(resp.GetVoices()))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
