package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// fakeUpstream lends in-memory sessions, in the order the test queued
// them, so that pump and stream logic can be tested without sockets.
type fakeUpstream struct {
	stt chan *fakeSTT
	tts chan *fakeTTS
}

func newFakeUpstream() *fakeUpstream {
	return &fakeUpstream{stt: make(chan *fakeSTT, 8), tts: make(chan *fakeTTS, 8)}
}

func (u *fakeUpstream) AcquireSTT(ctx context.Context, _ slngclient.Endpoint, _ slngclient.STTConfig) (Lease[STTSession], error) {
	select {
	case s := <-u.stt:
		return Lease[STTSession]{Session: s, Release: s.release}, nil
	case <-ctx.Done():
		return Lease[STTSession]{}, ctx.Err()
	}
}

func (u *fakeUpstream) AcquireTTS(ctx context.Context, _ slngclient.Endpoint, _ slngclient.TTSConfig) (Lease[TTSSession], error) {
	select {
	case s := <-u.tts:
		return Lease[TTSSession]{Session: s, Release: s.release}, nil
	case <-ctx.Done():
		return Lease[TTSSession]{}, ctx.Err()
	}
}

// fakeSession is what the fake sessions share: an id, a close, and a
// record of how the gateway released them.
type fakeSession struct {
	id        string
	readyAt   time.Time
	closeOnce sync.Once
	closed    chan struct{}
	mu        sync.Mutex
	released  bool
	relErr    error
}

func newFakeSession(id string) fakeSession {
	return fakeSession{id: id, readyAt: time.Now(), closed: make(chan struct{})}
}

func (s *fakeSession) ID() string                  { return s.id }
func (s *fakeSession) RequestID() string           { return "req-" + s.id }
func (s *fakeSession) Stats() slngclient.Stats     { return slngclient.Stats{ReadyAt: s.readyAt} }
func (s *fakeSession) Err() error                  { return nil }
func (s *fakeSession) Close(context.Context) error { s.CloseNow(); return nil }
func (s *fakeSession) CloseNow()                   { s.closeOnce.Do(func() { close(s.closed) }) }
func (s *fakeSession) release(err error, reuse bool) {
	s.mu.Lock()
	s.released, s.relErr = true, err
	s.mu.Unlock()
}

// errFakeLost is a failure SLNG may recover from, as a reaped session is.
var errFakeLost = &slngclient.UpstreamError{Kind: slngclient.KindTransport, Message: "connection lost", Retryable: true}

// fakeSTT is an STT session whose events the test sends through ev; a
// value in fail ends it with that error. If stall is not nil, every
// SendAudio waits for it to be closed (a socket SLNG stopped reading).
type fakeSTT struct {
	fakeSession
	ev    chan slngclient.STTEvent
	fail  chan error
	stall chan struct{}
	audio bytes.Buffer // under mu
	ended bool         // CloseSend was called; under mu
}

func newFakeSTT(id string) *fakeSTT {
	return &fakeSTT{fakeSession: newFakeSession(id), ev: make(chan slngclient.STTEvent, 16), fail: make(chan error, 1)}
}

func (s *fakeSTT) SendAudio(ctx context.Context, b []byte) error {
	if s.stall != nil {
		select {
		case <-s.stall:
		case <-s.closed:
			return slngclient.ErrSessionClosed
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.audio.Write(b)
	return nil
}

func (s *fakeSTT) received() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.audio.Bytes())
}

func (s *fakeSTT) Finalize(context.Context) error { return nil }

func (s *fakeSTT) CloseSend(context.Context) error {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	s.fail <- io.EOF
	return nil
}

func (s *fakeSTT) Recv(ctx context.Context) (slngclient.STTEvent, error) {
	select {
	case ev := <-s.ev:
		return ev, nil
	case err := <-s.fail:
		return slngclient.STTEvent{}, err
	case <-s.closed:
		return slngclient.STTEvent{}, slngclient.ErrSessionClosed
	case <-ctx.Done():
		return slngclient.STTEvent{}, ctx.Err()
	}
}

func final(text string) slngclient.STTEvent {
	return slngclient.STTEvent{Kind: slngclient.STTFinal, Transcript: slngclient.Transcript{Text: text}}
}

// fakeTTS is a TTS session that records what it was sent; the test sends
// its events through ev.
type fakeTTS struct {
	fakeSession
	ev   chan slngclient.TTSEvent
	fail chan error
	sent []string // under mu
}

func newFakeTTS(id string) *fakeTTS {
	return &fakeTTS{fakeSession: newFakeSession(id), ev: make(chan slngclient.TTSEvent, 16), fail: make(chan error, 1)}
}

func (s *fakeTTS) record(what string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closed:
		return slngclient.ErrSessionClosed
	default:
	}
	s.sent = append(s.sent, what)
	return nil
}

func (s *fakeTTS) Text(_ context.Context, text string, flush bool) error {
	if err := s.record("text:" + text); err != nil || !flush {
		return err
	}
	return s.record("flush")
}
func (s *fakeTTS) Flush(context.Context) error { return s.record("flush") }
func (s *fakeTTS) Clear(context.Context) error { return s.record("clear") }

func (s *fakeTTS) Recv(ctx context.Context) (slngclient.TTSEvent, error) {
	select {
	case ev := <-s.ev:
		return ev, nil
	case err := <-s.fail:
		return slngclient.TTSEvent{}, err
	case <-s.closed:
		return slngclient.TTSEvent{}, slngclient.ErrSessionClosed
	case <-ctx.Done():
		return slngclient.TTSEvent{}, ctx.Err()
	}
}

// RecvFast offers nothing to fast: the fake has no reader goroutine.
func (s *fakeTTS) RecvFast(ctx context.Context, _ func(slngclient.TTSEvent) bool) (slngclient.TTSEvent, error) {
	return s.Recv(ctx)
}

func (s *fakeTTS) sentList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sent...)
}

// newFakeHarness serves a gateway whose upstream lends the given sessions,
// in order.
func newFakeHarness(t *testing.T, tts []*fakeTTS, stt []*fakeSTT) *harness {
	up := newFakeUpstream()
	for _, s := range tts {
		up.tts <- s
	}
	for _, s := range stt {
		up.stt <- s
	}
	return serveGateway(t, up, Config{}, prometheus.NewRegistry(), sentinelLogger(t))
}

func pcm(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

func recvResponse(t *testing.T, stream speechv1.SpeechToTextService_TranscribeClient, what string) *speechv1.TranscribeResponse {
	t.Helper()
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return resp
}

// TestTranscribeReplayWithFakes: a session that fails hands everything
// after the last final to the next one, in order, before newer audio, and
// the caller hears of it before the new session's transcripts.
func TestTranscribeReplayWithFakes(t *testing.T) {
	t.Parallel()
	first, second := newFakeSTT("one"), newFakeSTT("two")
	h := newFakeHarness(t, nil, []*fakeSTT{first, second})
	ctx := testContext(t)
	stream, err := h.stt.Transcribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(r *speechv1.TranscribeRequest) {
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	audio := func(b []byte) *speechv1.TranscribeRequest {
		return &speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: b}}
	}
	send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: &speechv1.RecognitionConfig{}}})
	recvResponse(t, stream, "started")
	a, b, c := pcm(3200, 'a'), pcm(3200, 'b'), pcm(3200, 'c')
	send(audio(a))
	send(audio(b))
	waitFor(t, func() bool { return len(first.received()) == len(a)+len(b) }, "the first session's audio")
	first.fail <- errFakeLost
	if r := recvResponse(t, stream, "reconnected").GetReconnected(); r == nil || r.GetPreviousUpstreamSessionId() != "one" || r.GetUpstreamSessionId() != "two" {
		t.Fatalf("want reconnected from one to two, got %v", r)
	}
	send(audio(c))
	want := append(append(bytes.Clone(a), b...), c...)
	waitFor(t, func() bool { return len(second.received()) == len(want) }, "the second session's audio")
	if !bytes.Equal(second.received(), want) {
		t.Fatal("the new session heard the audio out of order")
	}
	second.ev <- final("all of it")
	if f := recvResponse(t, stream, "final").GetFinalTranscript(); f.GetText() != "all of it" {
		t.Fatalf("want the final, got %v", f)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := recvAll(t, stream.Recv); err != nil {
		t.Fatal(err)
	}
	first.mu.Lock()
	defer first.mu.Unlock()
	if !first.released || !errors.Is(first.relErr, errFakeLost) {
		t.Fatalf("the failed session was released with %v (released %v), want its failure", first.relErr, first.released)
	}
}

// TestTranscriptsDoNotWaitForAStalledWrite: while SLNG stops reading the
// audio replayed to a new session, its transcripts still reach the caller.
func TestTranscriptsDoNotWaitForAStalledWrite(t *testing.T) {
	t.Parallel()
	first, second := newFakeSTT("one"), newFakeSTT("two")
	second.stall = make(chan struct{})
	h := newFakeHarness(t, nil, []*fakeSTT{first, second})
	ctx := testContext(t)
	stream, err := h.stt.Transcribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: &speechv1.RecognitionConfig{}}}); err != nil {
		t.Fatal(err)
	}
	recvResponse(t, stream, "started")
	if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: pcm(32000, 'a')}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(first.received()) == 32000 }, "the first session's audio")
	first.fail <- errFakeLost
	recvResponse(t, stream, "reconnected")
	// The replay to the second session is stuck in its first write.
	for i := range 3 {
		second.ev <- final(fmt.Sprint("heard ", i))
		if f := recvResponse(t, stream, "final").GetFinalTranscript(); f.GetText() != fmt.Sprint("heard ", i) {
			t.Fatalf("want final %d, got %v", i, f)
		}
	}
	close(second.stall)
	waitFor(t, func() bool { return len(second.received()) == 32000 }, "the replay")
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := recvAll(t, stream.Recv); err != nil {
		t.Fatal(err)
	}
}

// speakTurn sends what SLNG sends for one turn: audio, then both end
// signals.
func (s *fakeTTS) speakTurn(audio []byte) {
	s.ev <- slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: audio}
	s.ev <- slngclient.TTSEvent{Kind: slngclient.TTSFlushed}
	s.ev <- slngclient.TTSEvent{Kind: slngclient.TTSAudioEnd}
}

// TestSynthesizeResumeWithFakes: turns flushed on a session that fails
// before speaking them go to the next session, in order and before newer
// text, and are spoken from there.
func TestSynthesizeResumeWithFakes(t *testing.T) {
	t.Parallel()
	first, second := newFakeTTS("one"), newFakeTTS("two")
	h := newFakeHarness(t, []*fakeTTS{first, second}, nil)
	ctx := testContext(t)
	stream, err := h.tts.Synthesize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(r *speechv1.SynthesizeRequest) {
		t.Helper()
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	text := func(s string) *speechv1.SynthesizeRequest {
		return &speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: s, Flush: true}}}
	}
	recv := func(what string) *speechv1.SynthesizeResponse {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		return resp
	}
	send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Config{Config: &speechv1.SynthesisConfig{}}})
	recv("started")
	send(text("One."))
	send(text("Two."))
	waitFor(t, func() bool { return len(first.sentList()) == 4 }, "both turns on the first session")
	first.fail <- errFakeLost
	if r := recv("reconnected").GetReconnected(); r.GetTurnsReplayed() != 2 || r.GetUpstreamSessionId() != "two" {
		t.Fatalf("want both turns replayed on session two, got %v", r)
	}
	send(text("Three."))
	want := []string{"text:One.", "flush", "text:Two.", "flush", "text:Three.", "flush"}
	waitFor(t, func() bool { return len(second.sentList()) == len(want) }, "three turns on the second session")
	if got := second.sentList(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("second session got %v, want %v", got, want)
	}
	for range 3 {
		second.speakTurn(pcm(960, 1))
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	out, err := recvAll(t, stream.Recv)
	if err != nil {
		t.Fatal(err)
	}
	var ends []uint64
	for _, r := range out {
		if e := r.GetAudioEnd(); e != nil {
			ends = append(ends, e.GetTurnId())
		}
	}
	if fmt.Sprint(ends) != "[1 2 3]" {
		t.Fatalf("turns ended %v, want [1 2 3]", ends)
	}
}
