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

	"github.com/speech-gateway/speech-gateway/slngsim"
)

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

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("slngsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: slngsim [flags]

Simulates SLNG's streaming TTS and STT WebSocket API (/v1/bridges/unmute/{tts|stt}/{model}
and /v1/{tts|stt}/{model}). Prints its URL on the first line of stdout.
Its TTS audio encodes the text as tones that its STT decodes back exactly.

Examples:
  slngsim --listen 127.0.0.1:8787 --api-key test
  slngsim --fault 'deepgram/aura:2=handshake:503' --fault '*=error:provider_error@chunks:5,fatal'

Flags:
`)
		fs.PrintDefaults()
	}
	opts := slngsim.Options{Faults: map[string]slngsim.Fault{}}
	var audioForm, logLevel string
	fs.StringVar(&opts.Addr, "listen", "127.0.0.1:8787", "listen address")
	fs.StringVar(&opts.APIKey, "api-key", "", "the only key accepted (Bearer or ?token=); empty accepts any")
	fs.BoolVar(&opts.Realtime, "realtime", false, "pace TTS audio at playback speed")
	fs.StringVar(&audioForm, "audio-form", "binary", "TTS audio as binary frames or audio_chunk json: binary|json")
	fs.DurationVar(&opts.IdleTimeout, "idle-timeout", 30*time.Second, "close sockets idle this long (pings do not count)")
	fs.DurationVar(&opts.MaxConnectionDuration, "max-duration", 30*time.Minute, "close sockets this old")
	fs.IntVar(&opts.MaxConcurrentPerKey, "max-concurrent-per-key", 0, "refuse more sockets per key with HTTP 429; 0 = no limit")
	fs.DurationVar(&opts.ConnectLatency, "connect-latency", 0, "delay before each handshake completes")
	fs.DurationVar(&opts.ReadyLatency, "ready-latency", 0, "delay between init and ready")
	fs.DurationVar(&opts.FirstAudioLatency, "first-audio-latency", 0, "delay before each turn's first audio")
	fs.BoolVar(&opts.BenchStamp, "bench-stamp", false, "stamp send time (big-endian Unix ns) into the first 8 bytes of each audio chunk")
	fs.Var(faultFlags(opts.Faults), "fault", "inject a fault, MODEL=KIND[:ARG][@POINT][,OPTION...] (repeatable); see package slngsim")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
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
	fmt.Fprintln(stdout, sim.URL())
	<-ctx.Done()
	return sim.Close()
}
