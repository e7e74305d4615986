package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

var encodings = map[string]speechv1.AudioEncoding{
	"linear16": speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16,
	"mp3":      speechv1.AudioEncoding_AUDIO_ENCODING_MP3,
	"opus":     speechv1.AudioEncoding_AUDIO_ENCODING_OPUS,
	"mulaw":    speechv1.AudioEncoding_AUDIO_ENCODING_MULAW,
	"alaw":     speechv1.AudioEncoding_AUDIO_ENCODING_ALAW,
}

func synthesize(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs, cf := flags("synthesize", stderr, 0)
	text := fs.String("text", "", "the text to speak")
	file := fs.String("file", "", "read the text from this file (- for stdin); default stdin when --text is empty")
	out := fs.String("out", "", "write the audio here: a WAV file for linear16, raw bytes otherwise (required)")
	model := fs.String("model", "", "SLNG model, e.g. deepgram/aura:2 (default: the gateway's)")
	voice := fs.String("voice", "", "voice id (default: the model's)")
	enc := fs.String("encoding", "linear16", "linear16, mp3, opus, mulaw or alaw")
	rate := fs.Int("rate", 24000, "sample rate in Hz")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *out == "" {
		fmt.Fprintln(stderr, "speechctl synthesize: --out is required")
		return errUsage
	}
	e, ok := encodings[*enc]
	if !ok {
		fmt.Fprintf(stderr, "speechctl synthesize: unknown --encoding %q\n", *enc)
		return errUsage
	}
	if *text == "" {
		var r io.Reader = stdin
		if *file != "" && *file != "-" {
			f, err := os.Open(*file)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		b, err := io.ReadAll(io.LimitReader(r, 1<<20))
		if err != nil {
			return err
		}
		*text = strings.TrimSpace(string(b))
	}
	conn, ctx, done, err := cf.connect(ctx)
	if err != nil {
		return err
	}
	defer done()
	stream, err := speechv1.NewTextToSpeechServiceClient(conn).SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{
		Text: *text,
		Config: &speechv1.SynthesisConfig{Model: *model, Voice: *voice,
			Format: &speechv1.AudioFormat{Encoding: e, SampleRateHz: int32(*rate)}},
	})
	if err != nil {
		return err
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	defer f.Close()
	wav := e == speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16
	if wav {
		if err := writeWAVHeader(f, uint32(*rate), 0); err != nil { // sizes fixed at the end
			return err
		}
	}
	w := bufio.NewWriter(f)
	var n uint32
	start := time.Now()
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		switch {
		case m.GetStarted() != nil:
			s := m.GetStarted()
			fmt.Fprintf(stderr, "synthesizing with %s%s (session %s)%s\n", s.GetConfig().GetModel(), asCaller(s.GetCallerId()), s.GetSessionId(),
				conversions(s.GetConversions()))
		case m.GetAudio() != nil:
			if n == 0 {
				fmt.Fprintf(stderr, "first audio after %s\n", time.Since(start).Round(time.Millisecond))
			}
			if _, err := w.Write(m.GetAudio().GetData()); err != nil {
				return err
			}
			n += uint32(len(m.GetAudio().GetData()))
		case m.GetWarning() != nil:
			fmt.Fprintf(stderr, "warning: %s: %s\n", m.GetWarning().GetCode(), m.GetWarning().GetMessage())
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if wav {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := writeWAVHeader(f, uint32(*rate), n); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "wrote %d bytes of audio to %s in %s\n", n, *out, time.Since(start).Round(time.Millisecond))
	return f.Close()
}

func transcribe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := flags("transcribe", stderr, 0)
	model := fs.String("model", "", "SLNG model, e.g. deepgram/nova:3 (default: the gateway's)")
	language := fs.String("language", "", "language hint, e.g. en")
	realtime := fs.Bool("realtime", false, "send the audio at playback speed, as a live source would")
	partials := fs.Bool("partials", true, "show partial transcripts on a terminal")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "speechctl transcribe: name one WAV file")
		return errUsage
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	format, audio, err := parseWAV(bufio.NewReader(f))
	if err != nil {
		return err
	}
	encName, err := format.encoding()
	if err != nil {
		return err
	}
	conn, ctx, done, err := cf.connect(ctx)
	if err != nil {
		return err
	}
	defer done()
	stream, err := speechv1.NewSpeechToTextServiceClient(conn).Transcribe(ctx)
	if err != nil {
		return err
	}
	cfg := &speechv1.RecognitionConfig{Model: *model, Language: *language, EnablePartials: *partials,
		Format: &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding(speechv1.AudioEncoding_value[encName]), SampleRateHz: int32(format.sampleRate),
			Channels: int32(format.channels)}}
	if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: cfg}}); err != nil {
		return err
	}
	// 100 ms chunks.
	bytesPerSecond := int(format.sampleRate) * int(format.bits) / 8 * int(format.channels)
	chunk := max(bytesPerSecond/10, 1)
	sendErr := make(chan error, 1)
	go func() {
		buf := make([]byte, chunk)
		next := time.Now()
		for {
			n, err := io.ReadFull(audio, buf)
			if n > 0 {
				if serr := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: buf[:n]}}); serr != nil {
					sendErr <- nil // the status comes from Recv
					return
				}
				if *realtime {
					next = next.Add(time.Duration(n) * time.Second / time.Duration(bytesPerSecond))
					select {
					case <-time.After(time.Until(next)):
					case <-ctx.Done():
						sendErr <- ctx.Err()
						return
					}
				}
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				sendErr <- stream.CloseSend()
				return
			}
			if err != nil {
				sendErr <- err
				return
			}
		}
	}()
	tty := isTerminal(stderr)
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			<-sendErr
			return err
		}
		switch {
		case m.GetStarted() != nil:
			s := m.GetStarted()
			fmt.Fprintf(stderr, "transcribing with %s%s (session %s)%s\n", s.GetConfig().GetModel(), asCaller(s.GetCallerId()), s.GetSessionId(),
				conversions(s.GetConversions()))
		case m.GetPartialTranscript() != nil:
			if tty {
				fmt.Fprintf(stderr, "\r\033[K… %s", m.GetPartialTranscript().GetText())
			}
		case m.GetFinalTranscript() != nil:
			t := m.GetFinalTranscript()
			if tty {
				fmt.Fprint(stderr, "\r\033[K")
			}
			if t.GetText() != "" {
				fmt.Fprintln(stdout, t.GetText())
			}
		case m.GetReconnected() != nil:
			fmt.Fprintf(stderr, "upstream reconnected (%s), %s of audio replayed\n",
				m.GetReconnected().GetReason(), m.GetReconnected().GetAudioReplayed().AsDuration())
		case m.GetWarning() != nil:
			fmt.Fprintf(stderr, "warning: %s: %s\n", m.GetWarning().GetCode(), m.GetWarning().GetMessage())
		}
	}
	return <-sendErr
}

func health(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := flags("health", stderr, 5*time.Second)
	service := fs.String("service", "", "the service to check; empty checks the server")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	conn, ctx, done, err := cf.connect(ctx)
	if err != nil {
		return err
	}
	defer done()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: *service})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, resp.GetStatus())
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return errors.New("the gateway is not serving")
	}
	return nil
}

// describe turns an error into lines for a person: the status code, the
// ErrorInfo reason, what was wrong and what to do.
func describe(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return "speechctl: " + err.Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "speechctl: %s: %s\n", st.Code(), st.Message())
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			fmt.Fprintf(&b, "  reason: %s", d.GetReason())
			for k, v := range d.GetMetadata() {
				fmt.Fprintf(&b, " %s=%s", k, v)
			}
			b.WriteString("\n")
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				fmt.Fprintf(&b, "  %s: %s\n", v.GetField(), v.GetDescription())
			}
		case *errdetails.RetryInfo:
			fmt.Fprintf(&b, "  retry after %s\n", d.GetRetryDelay().AsDuration())
		}
	}
	b.WriteString("  " + advice(st.Code()))
	return b.String()
}

func advice(c codes.Code) string {
	switch c {
	case codes.InvalidArgument:
		return "fix the request as described above."
	case codes.Unavailable:
		return "try again, after the delay when one is given; if nothing answers, check --addr, and --tls, --ca, --cert and --key for a gateway that serves TLS."
	case codes.ResourceExhausted:
		return "a limit was reached: try again later, or use fewer streams at once."
	case codes.Unauthenticated:
		return "the gateway's SLNG key was refused: tell the gateway's operators."
	case codes.NotFound:
		return "SLNG does not know that model: check --model."
	case codes.DeadlineExceeded, codes.Canceled:
		return "the call was stopped before it finished."
	}
	return "see docs/errors.md for what this status means."
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// conversions says how the gateway converts the stream's audio, "" when it
// does not: e.g. ", converted: resample 24000 Hz to 8000 Hz, encode
// LINEAR16 to MULAW".
func conversions(steps []*speechv1.AudioConversion) string {
	if len(steps) == 0 {
		return ""
	}
	parts := make([]string, 0, len(steps))
	for _, s := range steps {
		from, to := s.GetFrom(), s.GetTo()
		var what string
		switch s.GetKind() {
		case speechv1.AudioConversion_KIND_RESAMPLE:
			what = fmt.Sprintf("resample %d Hz to %d Hz", from.GetSampleRateHz(), to.GetSampleRateHz())
		case speechv1.AudioConversion_KIND_DOWNMIX:
			what = fmt.Sprintf("mix %d channels to %d", from.GetChannels(), to.GetChannels())
		default:
			what = fmt.Sprintf("%s %s to %s", strings.ToLower(strings.TrimPrefix(s.GetKind().String(), "KIND_")),
				strings.TrimPrefix(from.GetEncoding().String(), "AUDIO_ENCODING_"), strings.TrimPrefix(to.GetEncoding().String(), "AUDIO_ENCODING_"))
		}
		parts = append(parts, what)
	}
	return ", converted: " + strings.Join(parts, ", ")
}
