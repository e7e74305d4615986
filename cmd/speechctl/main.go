// Command speechctl talks to speech-gateway from a terminal:
//
//	speechctl synthesize --text "Hello." --out hello.wav
//	speechctl transcribe hello.wav
//	speechctl models
//	speechctl voices deepgram/aura:2
//	speechctl health
//
// Every subcommand takes --addr (default localhost:50051), TLS settings
// (--tls, --ca, --cert and --key for mutual TLS, --server-name), --timeout
// and --caller-id.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/speech-gateway/speech-gateway/internal/buildinfo"
)

// version and revision are set at link time (-ldflags "-X main.version=...
// -X main.revision=..."); empty, they come from the stamped build
// information.
var version, revision string

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, describe(err))
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

const usage = `Usage: speechctl <command> [flags]

Commands:
  synthesize   speak text: --text, --file or stdin; --out FILE (WAV for linear16)
  transcribe   transcribe a WAV file (16-bit PCM, mu-law or A-law, mono)
  models       list the models you may use, and what each offers (--kind tts|stt)
  voices       list a text-to-speech model's voices: voices MODEL [--language en]
  health       check the gateway's health
  version      print speechctl's version, revision and Go version (also --version)

Every command takes --addr host:port (default localhost:50051); --tls,
--ca FILE, --cert FILE and --key FILE (mutual TLS), --server-name NAME;
--timeout DURATION; and --caller-id ID (sent as x-caller-id metadata).
Run "speechctl <command> -h" for its flags.
`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "synthesize":
		return synthesize(ctx, args[1:], stdin, stdout, stderr)
	case "transcribe":
		return transcribe(ctx, args[1:], stdout, stderr)
	case "models":
		return models(ctx, args[1:], stdout, stderr)
	case "voices":
		return voices(ctx, args[1:], stdout, stderr)
	case "health":
		return health(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, buildinfo.Read(version, revision).Line("speechctl"))
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "speechctl: unknown command %q\n\n%s", args[0], usage)
	return errUsage
}
