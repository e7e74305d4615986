package service

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/pcmconv"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// validationError is the caller's own invalid request. It becomes
// INVALID_ARGUMENT with a BadRequest naming every offending field.
type validationError struct {
	violations []*errdetails.BadRequest_FieldViolation
}

func (e *validationError) Error() string {
	parts := make([]string, 0, len(e.violations))
	for _, v := range e.violations {
		parts = append(parts, v.GetField()+": "+v.GetDescription())
	}
	return "invalid request: " + strings.Join(parts, "; ")
}

// violations collects field violations; its err is nil when there are none.
type violations []*errdetails.BadRequest_FieldViolation

func (v *violations) add(field, format string, args ...any) {
	*v = append(*v, &errdetails.BadRequest_FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	return &validationError{violations: v}
}

func invalid(field, format string, args ...any) error {
	var v violations
	v.add(field, format, args...)
	return v.err()
}

// Sample rates outside this range are refused up front: SLNG accepts
// 8000-48000 Hz (slng-protocol.md section 5).
const (
	minSampleRate = 8000
	maxSampleRate = 48000
	minSpeed      = 0.25
	maxSpeed      = 4.0
)

// encodingNames are the SLNG names of the API's encodings.
var encodingNames = map[speechv1.AudioEncoding]string{
	speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16: "linear16",
	speechv1.AudioEncoding_AUDIO_ENCODING_MP3:      "mp3",
	speechv1.AudioEncoding_AUDIO_ENCODING_OPUS:     "opus",
	speechv1.AudioEncoding_AUDIO_ENCODING_MULAW:    "mulaw",
	speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:     "alaw",
}

// reservedTTSOptions and reservedSTTOptions are init config keys that have
// their own fields; model_options may not set them, so that the effective
// config reported in `started` is the one SLNG gets.
var (
	reservedTTSOptions = []string{"encoding", "sample_rate", "language", "speed", "voice", "model"}
	reservedSTTOptions = []string{"encoding", "sample_rate", "language", "enable_partials", "enable_partial_transcripts",
		"enable_vad", "enable_diarization", "min_speakers", "max_speakers", "enable_word_timestamps", "model"}
)

// checkModel validates a model name against the syntax and the allowlist.
func (s *Server) checkModel(v *violations, field, model string) {
	if err := slngclient.ValidateModel(model); err != nil {
		v.add(field, "%q is not a model variant like \"provider/model:variant\"", truncate(model, 140))
		return
	}
	if !s.modelEnabled(model) {
		v.add(field, "model %q is not enabled on this gateway", model)
	}
}

// modelEnabled reports whether --models lets model be used (every model
// when it is empty).
func (s *Server) modelEnabled(model string) bool {
	return len(s.cfg.ModelAllowlist) == 0 || s.allowed[model]
}

func checkFormat(v *violations, field string, f *speechv1.AudioFormat) {
	if f == nil {
		return
	}
	if f.GetEncoding() != speechv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED {
		if _, ok := encodingNames[f.GetEncoding()]; !ok {
			v.add(field+".encoding", "unknown encoding %d", int32(f.GetEncoding()))
		}
	}
	if r := f.GetSampleRateHz(); r != 0 && (r < minSampleRate || r > maxSampleRate) {
		v.add(field+".sample_rate_hz", "%d Hz is outside %d-%d", r, minSampleRate, maxSampleRate)
	}
	if ch := f.GetChannels(); ch < 0 || ch > pcmconv.MaxChannels {
		v.add(field+".channels", "%d channels: 0 (mono) or 1 to %d", ch, pcmconv.MaxChannels)
	}
}

func checkOptions(v *violations, field string, opts map[string]any, reserved []string) {
	for _, k := range reserved {
		if _, ok := opts[k]; ok {
			v.add(field, "%q has its own field and cannot be set here", k)
		}
	}
}

// checkText validates one piece of text to synthesize.
func (s *Server) checkText(field, text string) error {
	switch {
	case text == "":
		return invalid(field, "text is empty")
	case len(text) > s.cfg.MaxTextBytes:
		return invalid(field, "text is %d bytes; the limit is %d", len(text), s.cfg.MaxTextBytes)
	case !utf8.ValidString(text):
		return invalid(field, "text is not valid UTF-8")
	}
	return nil
}

// checkAudio validates one audio chunk to transcribe.
func (s *Server) checkAudio(audio []byte) error {
	switch {
	case len(audio) == 0:
		// SLNG's upstreams treat an empty binary frame as the end of the
		// audio, so an empty chunk would silently end recognition.
		return invalid("audio", "audio chunk is empty")
	case len(audio) > s.cfg.MaxAudioChunkBytes:
		return invalid("audio", "audio chunk is %d bytes; the limit is %d", len(audio), s.cfg.MaxAudioChunkBytes)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// formatWithDefaults fills in what a valid format left unset: LINEAR16 at
// rate. f is the caller's clone, changed in place (a new one when nil).
func formatWithDefaults(f *speechv1.AudioFormat, rate int32) *speechv1.AudioFormat {
	if f == nil {
		f = &speechv1.AudioFormat{}
	}
	if f.Encoding == speechv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED {
		f.Encoding = speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16
	}
	if f.SampleRateHz == 0 {
		f.SampleRateHz = rate
	}
	return f
}
