package slngclient_test

// Tests against what SLNG's published clients say the live bridge sends
// (slng-real-clients.md), from loopback WebSocket servers that send exactly
// the frames each test names.

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap/zaptest"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// frame is one message a scripted server sends: text unless binary.
type frame struct {
	text   string
	binary []byte
}

// script is what a scripted server does with one session after reading its
// init: send frames, then close with code (0: leave the socket open until
// the client closes it). ready sends `ready` before the frames;
// awaitFirst waits for one message from the client before the frames,
// awaitFrame for one before the close.
type script struct {
	ready      bool
	frames     []frame
	code       websocket.StatusCode
	awaitFirst bool
	awaitFrame bool
}

// scripted starts a loopback server that plays s to every session, and a
// client pointed at it.
func scripted(t *testing.T, s script, opts slngclient.Options) *slngclient.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		if _, _, err := c.Read(ctx); err != nil { // init
			return
		}
		if s.ready {
			if c.Write(ctx, websocket.MessageText, []byte(`{"type":"ready","session_id":"sess_scripted"}`)) != nil {
				return
			}
		}
		if s.awaitFirst {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
		for _, f := range s.frames {
			typ, b := websocket.MessageText, []byte(f.text)
			if f.binary != nil {
				typ, b = websocket.MessageBinary, f.binary
			}
			if c.Write(ctx, typ, b) != nil {
				return
			}
		}
		if s.awaitFrame {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
		if s.code != 0 {
			_ = c.Close(s.code, "")
			return
		}
		// Read until the client goes: a close from it ends the read.
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	opts.BaseURL = "ws" + strings.TrimPrefix(srv.URL, "http")
	opts.APIKey = key
	opts.Logger = zaptest.NewLogger(t)
	c, err := slngclient.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func text(s string) frame { return frame{text: s} }

// recvAllTTS reads a TTS session to its end and returns its events, with
// copies of their audio, and the terminal error.
func recvAllTTS(t *testing.T, ctx context.Context, s *slngclient.TTSSession) ([]slngclient.TTSEvent, error) {
	t.Helper()
	var evs []slngclient.TTSEvent
	for {
		ev, err := s.Recv(ctx)
		if err != nil {
			return evs, err
		}
		ev.Audio = bytes.Clone(ev.Audio)
		evs = append(evs, ev)
	}
}

// TestTTSEndOfTurnSpellings: every spelling of the end of a turn that
// routes send, and the capitalised ones, end the turn; a `cleared` that
// answers no clear is dropped, and the close after the audio ends the
// turn instead.
func TestTTSEndOfTurnSpellings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		frame string
		want  slngclient.TTSEventKind
	}{
		{`{"type":"flushed"}`, slngclient.TTSTurnEnd},
		{`{"type":"Flushed"}`, slngclient.TTSTurnEnd},
		{`{"type":"audio_end","duration":1.5}`, slngclient.TTSTurnEnd},
		{`{"type":"done"}`, slngclient.TTSTurnEnd},
		{`{"type":"end"}`, slngclient.TTSTurnEnd},
		{`{"type":"DONE","duration":0.25}`, slngclient.TTSTurnEnd},
		{`{"type":"cleared"}`, slngclient.TTSTurnEnd},
		{`{"type":"Cleared"}`, slngclient.TTSTurnEnd},
		// The ends of a reply LiveKit's newest plugin reads (tts.py):
		// ElevenLabs' isFinal in every form it accepts, and `event`
		// frames naming the end.
		{`{"audio":null,"isFinal":true}`, slngclient.TTSTurnEnd},
		{`{"isFinal":1,"normalizedAlignment":null}`, slngclient.TTSTurnEnd},
		{`{"audio":"","isFinal":" TRUE "}`, slngclient.TTSTurnEnd},
		{`{"isFinal":"1"}`, slngclient.TTSTurnEnd},
		{`{"type":"event","data":{"event":"complete"}}`, slngclient.TTSTurnEnd},
		{`{"type":"event","data":{"event":"Completed"}}`, slngclient.TTSTurnEnd},
		{`{"type":"Event","data":{"event_type":" final "}}`, slngclient.TTSTurnEnd},
		{`{"type":"event","data":{"event":"done"}}`, slngclient.TTSTurnEnd},
		{`{"type":"event","data":{"event_type":"end"}}`, slngclient.TTSTurnEnd},
	} {
		t.Run(tc.frame, func(t *testing.T) {
			t.Parallel()
			c := scripted(t, script{ready: true, frames: []frame{{binary: []byte{1, 2}}, text(tc.frame)}, code: websocket.StatusNormalClosure}, slngclient.Options{})
			ctx := testCtx(t)
			s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.CloseNow()
			evs, err := recvAllTTS(t, ctx, s)
			if !errors.Is(err, io.EOF) {
				t.Fatalf("Recv() error = %v, want io.EOF", err)
			}
			if len(evs) != 2 || evs[0].Kind != slngclient.TTSAudio || evs[1].Kind != tc.want {
				t.Fatalf("events %+v, want audio then %v", evs, tc.want)
			}
			if strings.Contains(tc.frame, "duration") && evs[1].Duration <= 0 {
				t.Errorf("%s: duration not read", tc.frame)
			}
			if byClose := strings.Contains(strings.ToLower(tc.frame), "cleared"); evs[1].ByClose != byClose {
				t.Errorf("%s: ByClose = %v, want %v", tc.frame, evs[1].ByClose, byClose)
			}
			if n := s.Stats().UnknownTypes; n != 0 {
				t.Errorf("UnknownTypes = %d, want 0", n)
			}
		})
	}
}

// TestJSONAudioShapes sends audio in every JSON form routes use, between
// binary frames, and frames that look like audio but carry none: the TTS
// session returns exactly the audio, in order, and counts the rest as
// unknown; an STT session ignores and counts all of it.
func TestJSONAudioShapes(t *testing.T) {
	t.Parallel()
	b64 := func(b ...byte) string { return base64.StdEncoding.EncodeToString(b) }
	frames := []frame{
		{binary: []byte{1}},
		text(`{"type":"audio_chunk","data":"` + b64(2) + `","sequence":1}`),
		text(`{"type":"audio","data":"` + b64(3) + `"}`),
		text(`{"type":"Audio","data":"` + b64(4) + `"}`),
		text(`{"type":"chunk","data":"` + b64(5) + `"}`),
		text(`{"type":"audio","data":{"audio":"` + b64(6) + `"}}`),
		text(`{"type":"chunk","audio":"` + b64(7) + `"}`),
		text(`{"audio":"` + b64(8) + `","isFinal":false}`),
		{binary: []byte{9}},
		// Not audio: ignored, counted as unknown.
		text(`{"audio":"","isFinal":false}`),
		text(`{"type":"audio_chunk","data":""}`),
		text(`{"type":"event","data":{"event":"progress"}}`),
		// Ignored, as LiveKit ignores them, and not counted.
		text(`{"type":"Metadata","request_id":"r"}`),
		text(`{"type":"Open"}`),
		text(`{"type":"control_ack"}`),
		text(`{"type":"ready","session_id":"again"}`),
		text(`{"type":"audio_end"}`),
	}
	const notAudio = 3
	t.Run("tts", func(t *testing.T) {
		t.Parallel()
		c := scripted(t, script{ready: true, frames: frames, code: websocket.StatusNormalClosure}, slngclient.Options{})
		ctx := testCtx(t)
		s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.CloseNow()
		evs, err := recvAllTTS(t, ctx, s)
		if !errors.Is(err, io.EOF) {
			t.Fatalf("Recv() error = %v, want io.EOF", err)
		}
		var audio []byte
		for _, ev := range evs[:len(evs)-1] {
			if ev.Kind != slngclient.TTSAudio || len(ev.Audio) == 0 {
				t.Fatalf("event %+v, want audio", ev)
			}
			audio = append(audio, ev.Audio...)
		}
		if want := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}; !bytes.Equal(audio, want) {
			t.Errorf("audio %v, want %v", audio, want)
		}
		if last := evs[len(evs)-1]; last.Kind != slngclient.TTSTurnEnd {
			t.Errorf("last event %+v, want the end of the turn", last)
		}
		if st := s.Stats(); st.UnknownTypes != notAudio || st.Malformed != 0 || st.AudioBytes != 9 {
			t.Errorf("stats %+v, want %d unknown, 0 malformed, 9 audio bytes", st, notAudio)
		}
	})
	t.Run("stt", func(t *testing.T) {
		t.Parallel()
		c := scripted(t, script{ready: true, frames: append(frames[:len(frames)-1:len(frames)-1],
			text(`{"type":"final_transcript","transcript":"after the audio"}`)), code: websocket.StatusNormalClosure}, slngclient.Options{})
		ctx := testCtx(t)
		s, err := c.DialSTT(ctx, nova, slngclient.STTConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.CloseNow()
		ev, err := s.Recv(ctx)
		if err != nil || ev.Kind != slngclient.STTFinal || ev.Transcript.Text != "after the audio" {
			t.Fatalf("Recv() = %+v, %v; want the final", ev, err)
		}
		if _, err := s.Recv(ctx); !errors.Is(err, io.EOF) {
			t.Fatalf("Recv() error = %v, want io.EOF", err)
		}
		if st := s.Stats(); st.UnknownTypes != int64(len(frames)-1) {
			t.Errorf("UnknownTypes = %d, want %d", st.UnknownTypes, len(frames)-1)
		}
	})
}

// TestEmptyJSONAudioFirst: an empty JSON audio payload as the first frame
// of a session, before the reader has a decode buffer, is ignored and
// counted; it once reached Recv as neither audio nor a message.
func TestEmptyJSONAudioFirst(t *testing.T) {
	t.Parallel()
	c := scripted(t, script{ready: true, frames: []frame{
		text(`{"type":"audio_chunk","data":""}`), text(`{"type":"audio_chunk","data":""}`), text(`{"type":"flushed"}`),
	}}, slngclient.Options{})
	ctx := testCtx(t)
	s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	if ev, err := s.Recv(ctx); err != nil || ev.Kind != slngclient.TTSTurnEnd {
		t.Fatalf("Recv() = %+v, %v; want the end of a turn", ev, err)
	}
	if n := s.Stats().UnknownTypes; n != 2 {
		t.Errorf("UnknownTypes = %d, want 2", n)
	}
}

// TestFinalsWithoutTiming: finals in the AsyncAPI shape (no start, maybe
// no duration, no from_finalize) are finals, and say what they lack.
func TestFinalsWithoutTiming(t *testing.T) {
	t.Parallel()
	c := scripted(t, script{ready: true, frames: []frame{
		text(`{"type":"partial_transcript","transcript":"hel","confidence":0.4}`),
		text(`{"type":"final_transcript","transcript":"hello","confidence":0.9,"language":"en"}`),
		text(`{"type":"final_transcript","transcript":"there","duration":0.5}`),
		text(`{"type":"final_transcript","transcript":"world","words":[{"word":"world","start":2.5,"end":3}]}`),
		text(`{"type":"final_transcript","transcript":"","start":3,"duration":0,"from_finalize":true}`),
	}, code: websocket.StatusNormalClosure}, slngclient.Options{})
	ctx := testCtx(t)
	s, err := c.DialSTT(ctx, nova, slngclient.STTConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	var got []slngclient.STTEvent
	for {
		ev, err := s.Recv(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	if len(got) != 5 || got[0].Kind != slngclient.STTPartial {
		t.Fatalf("events %+v", got)
	}
	for i, want := range []struct {
		text                               string
		hasStart, hasDuration, hasFinalize bool
	}{
		{"hello", false, false, false},
		{"there", false, true, false},
		{"world", false, false, false},
		{"", true, true, true},
	} {
		tr := got[i+1].Transcript
		if got[i+1].Kind != slngclient.STTFinal || tr.Text != want.text || tr.HasStart != want.hasStart ||
			tr.HasDuration != want.hasDuration || tr.HasFromFinalize != want.hasFinalize || tr.FromFinalize != want.hasFinalize {
			t.Errorf("final %d = %+v, want %+v", i, tr, want)
		}
	}
	if w := got[3].Transcript.Words; len(w) != 1 || w[0].Start != 2500*time.Millisecond {
		t.Errorf("words %+v: the times are in the words", w)
	}
}

// TestErrorFrameMidTurn: an error frame in the middle of a turn on a socket
// SLNG keeps open is a warning, in whatever shape it comes, and the
// session stays open.
func TestErrorFrameMidTurn(t *testing.T) {
	t.Parallel()
	c := scripted(t, script{ready: true, frames: []frame{
		{binary: []byte{1, 2}},
		text(`{"type":"Error","error":{"code":"pronunciation_not_found","message":"no such word"}}`),
		text(`{"type":"error","data":{"status_code":400,"description":"Text is too long"}}`),
	}}, slngclient.Options{})
	ctx := testCtx(t)
	s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	if ev, err := s.Recv(ctx); err != nil || ev.Kind != slngclient.TTSAudio {
		t.Fatalf("Recv() = %+v, %v; want audio", ev, err)
	}
	for _, want := range [][2]string{{"pronunciation_not_found", "no such word"}, {"400", "Text is too long"}} {
		ev, err := s.Recv(ctx)
		if err != nil || ev.Kind != slngclient.TTSWarning || ev.Err.Code != want[0] || ev.Err.Message != want[1] || ev.Err.Kind != slngclient.KindErrorFrame {
			t.Fatalf("Recv() = %+v, %v; want a warning %v", ev, err, want)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("the session ended: %v", err)
	}
	if err := s.Text(ctx, "still open", true); err != nil {
		t.Fatalf("Text() after the warnings = %v", err)
	}
}

// TestTTSUndecodableAudio: JSON audio in unpadded or URL-safe base64 is
// audio, and JSON audio that is not base64 at all is reported
// (TTSUndecodableAudio) where it came, without ending the turn or the
// session, rather than skipped as a malformed frame.
func TestTTSUndecodableAudio(t *testing.T) {
	t.Parallel()
	c := scripted(t, script{ready: true, frames: []frame{
		text(`{"type":"audio_chunk","data":"AQI"}`),     // 1, 2 unpadded
		text(`{"type":"audio_chunk","data":"not*b64"}`), // lost
		text(`{"audio":"-_8"}`),                         // 0xfb, 0xff url-safe
		text(`{"type":"audio_end"}`),
	}, code: websocket.StatusNormalClosure}, slngclient.Options{})
	ctx := testCtx(t)
	s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseNow()
	evs, err := recvAllTTS(t, ctx, s)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v, want io.EOF", err)
	}
	want := []slngclient.TTSEvent{
		{Kind: slngclient.TTSAudio, Audio: []byte{1, 2}},
		{Kind: slngclient.TTSUndecodableAudio},
		{Kind: slngclient.TTSAudio, Audio: []byte{0xfb, 0xff}},
		{Kind: slngclient.TTSTurnEnd, Unflushed: true},
	}
	if !reflect.DeepEqual(evs, want) {
		t.Fatalf("events = %+v, want %+v", evs, want)
	}
	if st := s.Stats(); st.Malformed != 0 {
		t.Fatalf("malformed = %d, want 0: undecodable audio is reported, not skipped", st.Malformed)
	}
}

// TestTTSEndCarriesAudio: an end of a reply may carry the reply's last
// audio, in every place JSON audio has it (LiveKit's tts.py plays it before
// the end): the session yields that audio, then the end, once per turn.
func TestTTSEndCarriesAudio(t *testing.T) {
	t.Parallel()
	b64 := func(b ...byte) string { return base64.StdEncoding.EncodeToString(b) }
	for _, end := range []string{
		`{"type":"audio_end","data":"` + b64(2, 3) + `"}`,
		`{"type":"Flushed","data":{"audio":"` + b64(2, 3) + `"}}`,
		`{"type":"done","audio":"` + b64(2, 3) + `"}`,
		`{"type":"end","data":"` + b64(2, 3) + `","duration":0.1}`,
		`{"audio":"` + b64(2, 3) + `","isFinal":true}`,
		`{"type":"event","data":{"event":"complete","audio":"` + b64(2, 3) + `"}}`,
	} {
		t.Run(end, func(t *testing.T) {
			t.Parallel()
			c := scripted(t, script{ready: true, frames: []frame{{binary: []byte{1}}, text(end)}, awaitFrame: true,
				code: websocket.StatusNormalClosure}, slngclient.Options{})
			ctx := testCtx(t)
			s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.CloseNow()
			if err := s.Text(ctx, "Hello.", true); err != nil {
				t.Fatal(err)
			}
			evs, err := recvAllTTS(t, ctx, s)
			if !errors.Is(err, io.EOF) {
				t.Fatalf("Recv() error = %v, want io.EOF", err)
			}
			var audio []byte
			ends := 0
			for _, ev := range evs {
				switch ev.Kind {
				case slngclient.TTSAudio:
					if ends > 0 {
						t.Fatalf("audio after the end: %+v", evs)
					}
					audio = append(audio, ev.Audio...)
				case slngclient.TTSTurnEnd:
					ends++
					if ev.Unflushed || ev.ByClose {
						t.Errorf("end %+v, want the flushed turn's own", ev)
					}
				default:
					t.Errorf("event %+v", ev)
				}
			}
			if !bytes.Equal(audio, []byte{1, 2, 3}) || ends != 1 {
				t.Fatalf("audio %v and %d ends, want [1 2 3] and one end", audio, ends)
			}
		})
	}
}

// TestTTSErrorForms: every error form LiveKit's newest plugin reads on a
// TTS socket is a warning with the frame's message and code: typed `error`
// and `Error`, an `event` naming a failure, and a frame without a type
// that holds an error. The close after it carries the same code.
func TestTTSErrorForms(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ frame, code, message string }{
		{`{"type":"error","code":"provider_error","message":"boom"}`, "provider_error", "boom"},
		{`{"type":"event","data":{"event":"failed","message":"boom"}}`, "", "boom"},
		{`{"type":"event","data":{"event_type":"Error","error":"boom","status_code":503}}`, "503", "boom"},
		{`{"error":"boom"}`, "", "boom"},
		{`{"error":{"message":"boom","code":429},"isFinal":false}`, "429", "boom"},
	} {
		t.Run(tc.frame, func(t *testing.T) {
			t.Parallel()
			c := scripted(t, script{ready: true, frames: []frame{{binary: []byte{1}}, text(tc.frame)}, awaitFrame: true,
				code: websocket.StatusInternalError}, slngclient.Options{})
			ctx := testCtx(t)
			s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.CloseNow()
			if err := s.Text(ctx, "Hello.", true); err != nil {
				t.Fatal(err)
			}
			evs, err := recvAllTTS(t, ctx, s)
			if len(evs) != 2 || evs[1].Kind != slngclient.TTSWarning || evs[1].Err.Code != tc.code || evs[1].Err.Message != tc.message {
				t.Fatalf("events %+v, want audio then a warning %q %q", evs, tc.code, tc.message)
			}
			// A frame that names no code says nothing the close does not:
			// the close is classified, with the frame's message.
			kind := slngclient.KindErrorFrame
			if tc.code == "" {
				kind = slngclient.KindClose
			}
			ue, ok := slngclient.AsUpstreamError(err)
			if !ok || ue.Kind != kind || ue.Code != tc.code || ue.Message != tc.message || ue.CloseCode != 1011 {
				t.Fatalf("Recv() error = %v, want the frame's error closed with 1011", err)
			}
		})
	}
}
