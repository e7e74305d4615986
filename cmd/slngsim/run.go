package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/speech-gateway/speech-gateway/internal/buildinfo"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// version and revision are set at link time (-ldflags "-X main.version=...
// -X main.revision=..."); empty, they come from the stamped build
// information.
var version, revision string

// faultFlags collects repeated --fault flags.
type faultFlags map[string]slngsim.Fault

func (f faultFlags) String() string { return fmt.Sprint(len(f), " faults") }

func (f faultFlags) Set(spec string) error {
	model, fault, err := slngsim.ParseFault(spec)
	if err != nil {
		return err
	}
	f[model] = fault
	return nil
}

// modelProfiles collects repeated --model-profile flags: model to rule.
type modelProfiles map[string]func(model string) slngsim.Profile

func (m modelProfiles) String() string { return fmt.Sprint(len(m), " model profiles") }

func (m modelProfiles) Set(spec string) error {
	model, name, ok := strings.Cut(spec, "=")
	if !ok || model == "" || name == "" {
		return fmt.Errorf("model profile %q: want MODEL=NAME", spec)
	}
	f, err := slngsim.ProfileFunc(name)
	if err != nil {
		return err
	}
	m[model] = f
	return nil
}

// profileList is the profile names for -h, wrapped.
func profileList() string {
	var b strings.Builder
	line := " "
	for _, n := range slngsim.ProfileNames() {
		if len(line)+len(n) > 96 {
			b.WriteString(line + "\n")
			line = " "
		}
		line += " " + n
	}
	return b.String() + line + "\n"
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("slngsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: slngsim [flags]

Simulates SLNG's streaming TTS and STT WebSocket API (/v1/bridges/unmute/{tts|stt}/{model}
and /v1/{tts|stt}/{model}). Prints its URL on the first line of stdout.
Its TTS audio encodes the text as tones that its STT decodes back exactly.

Routes behave as SLNG's own clients report the live service does, which is
less uniform and less kind than its documentation: --profile realistic (the
default) applies the documented rule per provider; a named profile applies
one behaviour to every model (rich is the original, kindest one). The
behaviours, their sources and the realistic rule are in docs/simulator.md.

Examples:
  slngsim --listen 127.0.0.1:8787 --api-key test
  slngsim --profile rich --model-profile cartesia/sonic:3=close-after-audio
  slngsim --fault 'deepgram/aura:2=handshake:503' --fault '*=error:provider_error@chunks:5,fatal'

Profiles:
`+profileList()+`
Flags:
`)
		fs.PrintDefaults()
	}
	opts := slngsim.Options{Faults: map[string]slngsim.Fault{}}
	overrides := modelProfiles{}
	var audioForm, logLevel, profile string
	fs.StringVar(&profile, "profile", "realistic", "route behaviour of every model: realistic (per provider) or a profile name (see above)")
	fs.Var(overrides, "model-profile", "route behaviour of one model, MODEL=NAME (repeatable); wins over --profile")
	fs.StringVar(&opts.Addr, "listen", "127.0.0.1:8787", "listen address")
	fs.StringVar(&opts.APIKey, "api-key", "", "the only key accepted (Bearer or ?token=); empty accepts any")
	fs.BoolVar(&opts.Realtime, "realtime", false, "pace TTS audio at playback speed")
	fs.StringVar(&audioForm, "audio-form", "binary", "TTS audio as the profile says (binary) or audio_chunk json on every model: binary|json")
	fs.DurationVar(&opts.IdleTimeout, "idle-timeout", 30*time.Second, "reap sockets idle this long (pings do not count); close code and error frame per profile")
	fs.DurationVar(&opts.MaxConnectionDuration, "max-duration", 30*time.Minute, "reap sockets this old; close code and error frame per profile")
	fs.IntVar(&opts.MaxConcurrentPerKey, "max-concurrent-per-key", 0, "refuse more sockets per key with HTTP 429; 0 = no limit")
	fs.DurationVar(&opts.ConnectLatency, "connect-latency", 0, "delay before each handshake completes")
	fs.DurationVar(&opts.ReadyLatency, "ready-latency", 0, "delay between init and ready")
	fs.DurationVar(&opts.FirstAudioLatency, "first-audio-latency", 0, "delay before each turn's first audio")
	fs.DurationVar(&opts.Latency, "latency", 0, "one-way network delay on every byte received and sent (every frame, pings and closes too); the round trip is twice this")
	fs.DurationVar(&opts.Jitter, "jitter", 0, "with --latency, vary each delay by up to this much either way, never reordering")
	fs.BoolVar(&opts.BenchStamp, "bench-stamp", false, "stamp send time (big-endian Unix ns) into the first 8 bytes of each audio chunk")
	fs.Var(faultFlags(opts.Faults), "fault", "inject a fault, MODEL=KIND[:ARG][@POINT][,OPTION...] (repeatable); see package slngsim")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version, revision and Go version, and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		_, err := fmt.Fprintln(stdout, buildinfo.Read(version, revision).Line("slngsim"))
		return err
	}
	switch strings.ToLower(audioForm) {
	case "binary":
		opts.AudioForm = slngsim.AudioBinary
	case "json":
		opts.AudioForm = slngsim.AudioJSON
	default:
		return fmt.Errorf("--audio-form must be binary or json, not %q", audioForm)
	}
	base, err := slngsim.ProfileFunc(profile)
	if err != nil {
		return err
	}
	opts.ProfileFor = func(model string) slngsim.Profile {
		if f, ok := overrides[model]; ok {
			return f(model)
		}
		return base(model)
	}
	level, err := zapcore.ParseLevel(logLevel)
	if err != nil {
		return err
	}
	ec := zap.NewDevelopmentEncoderConfig()
	opts.Logger = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(ec), zapcore.Lock(zapcore.AddSync(stderr)), level))

	sim, err := slngsim.Start(opts)
	if err != nil {
		return err
	}
	opts.Logger.Info("route profiles", zap.String("profile", profile), zap.Int("model_overrides", len(overrides)))
	fmt.Fprintln(stdout, sim.URL())
	<-ctx.Done()
	return sim.Close()
}
