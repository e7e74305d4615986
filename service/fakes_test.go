package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// fakeUpstream lends in-memory sessions, in the order the test queued
// them, so that stream logic can be tested without sockets. A test may
// queue an error instead of a session: that acquire fails with it, as the
// pool's does (a refused key, an open breaker). Every acquire's request and
// configuration is recorded, and every session it lent is closed when the
// test ends.
type fakeUpstream struct {
	stt  chan any // *fakeSTT or error
	tts  chan any // *fakeTTS or error
	mu   sync.Mutex
	lent []interface{ CloseNow() }
	// Under mu: what each acquire asked for, in order.
	ttsAsked []fakeAsk[slngclient.TTSConfig]
	sttAsked []fakeAsk[slngclient.STTConfig]
}

// fakeAsk is one acquire: the stream's request and the session's
// configuration.
type fakeAsk[C any] struct {
	Req AcquireRequest
	Cfg C
}

func newFakeUpstream(t testing.TB) *fakeUpstream {
	u := &fakeUpstream{stt: make(chan any, 64), tts: make(chan any, 64)}
	t.Cleanup(func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		for _, s := range u.lent {
			s.CloseNow()
		}
	})
	return u
}

func (u *fakeUpstream) lend(s interface{ CloseNow() }) {
	u.mu.Lock()
	u.lent = append(u.lent, s)
	u.mu.Unlock()
}

// asked returns the acquires so far.
func (u *fakeUpstream) asked() (tts []fakeAsk[slngclient.TTSConfig], stt []fakeAsk[slngclient.STTConfig]) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.ttsAsked), slices.Clone(u.sttAsked)
}

func (u *fakeUpstream) AcquireSTT(ctx context.Context, req AcquireRequest, cfg slngclient.STTConfig) (Lease[STTSession], error) {
	u.mu.Lock()
	u.sttAsked = append(u.sttAsked, fakeAsk[slngclient.STTConfig]{req, cfg})
	u.mu.Unlock()
	select {
	case v := <-u.stt:
		if err, ok := v.(error); ok {
			return Lease[STTSession]{}, err
		}
		s := v.(*fakeSTT)
		u.lend(s)
		s.start()
		return Lease[STTSession]{Session: s, Release: s.release}, nil
	case <-ctx.Done():
		return Lease[STTSession]{}, ctx.Err()
	}
}

func (u *fakeUpstream) AcquireTTS(ctx context.Context, req AcquireRequest, cfg slngclient.TTSConfig) (Lease[TTSSession], error) {
	u.mu.Lock()
	u.ttsAsked = append(u.ttsAsked, fakeAsk[slngclient.TTSConfig]{req, cfg})
	u.mu.Unlock()
	select {
	case v := <-u.tts:
		if err, ok := v.(error); ok {
			return Lease[TTSSession]{}, err
		}
		s := v.(*fakeTTS)
		u.lend(s)
		s.start()
		return Lease[TTSSession]{Session: s, Release: s.release}, nil
	case <-ctx.Done():
		return Lease[TTSSession]{}, ctx.Err()
	}
}

// fakeEvents is a fake session's side that the stream reads: the test
// queues events and the session's end with send and end, in order, and
// one goroutine (started when the session is lent) hands them to Events,
// which it closes at the end, as slngclient's reader does.
type fakeEvents[E any] struct {
	in     chan fakeItem[E]
	events chan E
	closed chan struct{}
	once   sync.Once
	errMu  sync.Mutex
	err    error
	done   chan struct{}
}

type fakeItem[E any] struct {
	ev  E
	end bool
	err error
}

func newFakeEvents[E any]() fakeEvents[E] {
	return fakeEvents[E]{in: make(chan fakeItem[E], 64), events: make(chan E), closed: make(chan struct{}), done: make(chan struct{})}
}

// send queues an event for the stream.
func (f *fakeEvents[E]) send(ev E) { f.in <- fakeItem[E]{ev: ev} }

// end ends the session, after the events queued, with err (io.EOF: SLNG's
// normal close).
func (f *fakeEvents[E]) end(err error) { f.in <- fakeItem[E]{end: true, err: err} }

func (f *fakeEvents[E]) start() {
	go func() {
		defer close(f.done)
		defer close(f.events)
		for {
			select {
			case it := <-f.in:
				if it.end {
					f.setErr(it.err)
					return
				}
				select {
				case f.events <- it.ev:
				case <-f.closed:
					f.setErr(slngclient.ErrSessionClosed)
					return
				}
			case <-f.closed:
				f.setErr(slngclient.ErrSessionClosed)
				return
			}
		}
	}()
}

func (f *fakeEvents[E]) setErr(err error) {
	f.errMu.Lock()
	f.err = err
	f.errMu.Unlock()
}

func (f *fakeEvents[E]) Events() <-chan E { return f.events }

func (f *fakeEvents[E]) Err() error {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return f.err
}

func (f *fakeEvents[E]) isClosed() bool {
	select {
	case <-f.closed:
		return true
	default:
		return false
	}
}

// CloseNow ends the session, and waits for its goroutine if it started.
func (f *fakeEvents[E]) CloseNow() {
	f.once.Do(func() { close(f.closed) })
}

func (f *fakeEvents[E]) Close(context.Context) error { f.CloseNow(); return nil }

// fakeSession is what the fake sessions share: an id, and a record of how
// the gateway released them.
type fakeSession struct {
	id       string
	readyAt  time.Time
	mu       sync.Mutex
	released bool
	reused   bool
	relErr   error
}

func newFakeSession(id string) fakeSession {
	return fakeSession{id: id, readyAt: time.Now()}
}

func (s *fakeSession) ID() string              { return s.id }
func (s *fakeSession) RequestID() string       { return "req-" + s.id }
func (s *fakeSession) Stats() slngclient.Stats { return slngclient.Stats{ReadyAt: s.readyAt} }
func (s *fakeSession) release(err error, reuse bool) {
	s.mu.Lock()
	if !s.released {
		s.released, s.relErr, s.reused = true, err, reuse
	}
	s.mu.Unlock()
}

// releasedWith reports how the gateway gave the session back.
func (s *fakeSession) releasedWith() (released, reused bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.released, s.reused, s.relErr
}

// errFakeLost is a failure SLNG may recover from, as a lost connection is.
var errFakeLost = &slngclient.UpstreamError{Kind: slngclient.KindTransport, Message: "connection lost", CloseCode: 1006}

// fakeSTT is an STT session that records the audio it was sent. If stall
// is not nil, every SendAudio waits for it to be closed (a socket SLNG
// stopped reading).
type fakeSTT struct {
	fakeSession
	fakeEvents[slngclient.STTEvent]
	stall    chan struct{}
	audio    bytes.Buffer // under mu
	ended    bool         // CloseSend was called; under mu
	writes   []string     // "audio:N", "finalize", "close"; under mu
	endOnEnd bool         // CloseSend ends the session with io.EOF (SLNG's answer)
}

func newFakeSTT(id string) *fakeSTT {
	return &fakeSTT{fakeSession: newFakeSession(id), fakeEvents: newFakeEvents[slngclient.STTEvent](), endOnEnd: true}
}

func (s *fakeSTT) SendAudio(ctx context.Context, b []byte) error {
	if s.stall != nil {
		select {
		case <-s.stall:
		case <-s.closed:
			return slngclient.ErrSessionClosed
		}
	}
	if s.isClosed() {
		return slngclient.ErrSessionClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.audio.Write(b)
	s.writes = append(s.writes, fmt.Sprint("audio:", len(b)))
	return nil
}

func (s *fakeSTT) received() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.audio.Bytes())
}

func (s *fakeSTT) Finalize(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes = append(s.writes, "finalize")
	return nil
}

func (s *fakeSTT) CloseSend(context.Context) error {
	s.mu.Lock()
	s.ended = true
	s.writes = append(s.writes, "close")
	s.mu.Unlock()
	if s.endOnEnd {
		s.end(io.EOF)
	}
	return nil
}

func final(text string) slngclient.STTEvent {
	return slngclient.STTEvent{Kind: slngclient.STTFinal, Transcript: slngclient.Transcript{Text: text}}
}

// fakeTTS is a TTS session that records what it was sent.
type fakeTTS struct {
	fakeSession
	fakeEvents[slngclient.TTSEvent]
	sent []string // under mu
	// notReusable makes Reusable false, as a session with a turn in
	// flight is.
	notReusable bool
	// closeHeld, if not nil, holds a graceful Close until it is closed or
	// the close's context ends: SLNG taking its time to close.
	closeHeld chan struct{}
}

// Close is a graceful close: held by closeHeld, if set.
func (s *fakeTTS) Close(ctx context.Context) error {
	if s.closeHeld != nil {
		select {
		case <-s.closeHeld:
		case <-ctx.Done():
		}
	}
	s.CloseNow()
	return nil
}

func newFakeTTS(id string) *fakeTTS {
	return &fakeTTS{fakeSession: newFakeSession(id), fakeEvents: newFakeEvents[slngclient.TTSEvent]()}
}

func (s *fakeTTS) record(what string) error {
	if s.isClosed() {
		return slngclient.ErrSessionClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
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
func (s *fakeTTS) Reusable() bool              { return !s.notReusable && !s.isClosed() && s.Err() == nil }
func (s *fakeTTS) SetAlignment(bool)           {}

func (s *fakeTTS) sentList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sent...)
}

// newFakeHarness serves a gateway whose upstream lends the given sessions,
// in order.
func newFakeHarness(t *testing.T, tts []*fakeTTS, stt []*fakeSTT) *harness {
	h, up := newFakeGateway(t, Config{})
	for _, s := range tts {
		up.tts <- s
	}
	for _, s := range stt {
		up.stt <- s
	}
	return h
}

// newFakeGateway serves a gateway with cfg on an in-memory upstream that
// the test queues sessions (or errors) on as it goes. With a fake
// cfg.Clock, every stream timer waits for the test to advance it.
func newFakeGateway(t *testing.T, cfg Config) (*harness, *fakeUpstream) {
	up := newFakeUpstream(t)
	return serveGateway(t, up, cfg, prometheus.NewRegistry(), sentinelLogger(t)), up
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
	first.end(errFakeLost)
	if r := recvResponse(t, stream, "reconnected").GetReconnected(); r == nil || r.GetPreviousUpstreamSessionId() != "one" || r.GetUpstreamSessionId() != "two" {
		t.Fatalf("want reconnected from one to two, got %v", r)
	}
	send(audio(c))
	want := append(append(bytes.Clone(a), b...), c...)
	waitFor(t, func() bool { return len(second.received()) == len(want) }, "the second session's audio")
	if !bytes.Equal(second.received(), want) {
		t.Fatal("the new session heard the audio out of order")
	}
	second.send(final("all of it"))
	if f := recvResponse(t, stream, "final").GetFinalTranscript(); f.GetText() != "all of it" {
		t.Fatalf("want the final, got %v", f)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := recvAll(t, stream.Recv); err != nil {
		t.Fatal(err)
	}
	if released, _, err := first.releasedWith(); !released || !errors.Is(err, errFakeLost) {
		t.Fatalf("the failed session was released with %v (released %v), want its failure", err, released)
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
	first.end(errFakeLost)
	recvResponse(t, stream, "reconnected")
	// The replay to the second session is stuck in its first write.
	for i := range 3 {
		second.send(final(fmt.Sprint("heard ", i)))
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

// speakTurn sends what a TTS session yields for one turn: audio, then the
// turn's end.
func (s *fakeTTS) speakTurn(audio []byte) {
	s.send(slngclient.TTSEvent{Kind: slngclient.TTSAudio, Audio: audio})
	s.send(slngclient.TTSEvent{Kind: slngclient.TTSTurnEnd})
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
	first.end(errFakeLost)
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
