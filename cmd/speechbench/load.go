package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// samples collects latencies from many goroutines.
type samples struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *samples) add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

func (s *samples) addAll(ds []time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, ds...)
	s.mu.Unlock()
}

// quantile returns the q-quantile in milliseconds (0 without samples).
func (s *samples) quantile(q float64) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.d) == 0 {
		return 0
	}
	slices.Sort(s.d)
	i := min(int(q*float64(len(s.d))), len(s.d)-1)
	return float64(s.d[i]) / float64(time.Millisecond)
}

func (s *samples) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.d)
}

// gatewayClients dials n connections to a gateway, so that many streams
// spread over several HTTP/2 connections, as many callers would. window, if
// positive, fixes each stream's HTTP/2 flow-control window (and 16 times
// that for the connection), which turns off grpc-go's BDP estimation and
// its pings; 0 keeps grpc-go's defaults.
func gatewayClients(addr string, n, window int) ([]*grpc.ClientConn, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if window > 0 {
		opts = append(opts, grpc.WithInitialWindowSize(int32(window)), grpc.WithInitialConnWindowSize(int32(16*window)))
	}
	var conns []*grpc.ClientConn
	for range n {
		c, err := grpc.NewClient(addr, opts...)
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// stamp is the simulator's send time written into a chunk (bench mode).
func stamp(chunk []byte) (time.Time, bool) {
	if len(chunk) < 8 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(chunk))), true
}

// speechText returns text that takes about d to speak at 24 kHz: each
// character is two 96-sample symbols.
func speechText(d time.Duration, rate int) string {
	chars := int(d.Seconds() * float64(rate) / 192)
	return strings.Repeat("The gateway adds almost nothing. ", chars/33+1)[:max(chars, 1)]
}

// ttsResult is what one wave of TTS streams measured.
type ttsResult struct {
	latency *samples
	errors  atomic.Int64
	bytes   atomic.Int64
}

func newTTSResult() *ttsResult { return &ttsResult{latency: &samples{}} }

// fanOut runs n streams, calling stream(i) for i in [0, n) each in its own
// goroutine, and returns when all have returned.
func fanOut(n int, stream func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stream(i) })
	}
	wg.Wait()
}

// ttsRelay runs n SynthesizeText streams through a relay (the gateway or
// the floor), each speaking text once, recording each chunk's latency from
// the simulator's stamp into r, which callers may watch while it runs.
func ttsRelay(ctx context.Context, conns []*grpc.ClientConn, n int, text string, r *ttsResult) *ttsResult {
	fanOut(n, func(i int) {
		client := speechv1.NewTextToSpeechServiceClient(conns[i%len(conns)])
		stream, err := client.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: text})
		if err != nil {
			r.errors.Add(1)
			return
		}
		local := make([]time.Duration, 0, 512)
		eachMessage(stream.Recv, &r.errors, func(m *speechv1.SynthesizeResponse) {
			if a := m.GetAudio(); a != nil {
				now := time.Now()
				if t, ok := stamp(a.GetData()); ok {
					local = append(local, now.Sub(t))
				}
				r.bytes.Add(int64(len(a.GetData())))
			}
		})
		r.latency.addAll(local)
	})
	return r
}

// ttsDirect does the same work with slngclient straight to the simulator,
// as a service that dials SLNG itself would.
func ttsDirect(ctx context.Context, client *slngclient.Client, n int, text string) *ttsResult {
	r := newTTSResult()
	fanOut(n, func(int) {
		s, err := client.DialTTS(ctx, slngclient.Endpoint{Model: "deepgram/aura:2"}, slngclient.TTSConfig{Voice: "aura-2-thalia-en"})
		if err != nil {
			r.errors.Add(1)
			return
		}
		defer s.CloseNow()
		if err := s.Text(ctx, text, true); err != nil {
			r.errors.Add(1)
			return
		}
		local := make([]time.Duration, 0, 512)
		for {
			ev, err := s.Recv(ctx)
			if err != nil {
				r.errors.Add(1)
				break
			}
			if ev.Kind == slngclient.TTSAudio {
				now := time.Now()
				if t, ok := stamp(ev.Audio); ok {
					local = append(local, now.Sub(t))
				}
				r.bytes.Add(int64(len(ev.Audio)))
			}
			if ev.Kind == slngclient.TTSTurnEnd {
				break
			}
		}
		r.latency.addAll(local)
	})
	return r
}

// sttResult measures the delay from the last audio of an utterance to its
// final transcript.
type sttResult struct {
	finalDelay *samples
	errors     atomic.Int64
	finals     atomic.Int64
}

// utterances is the audio a Transcribe stream sends: sentences of
// simulator speech at 16 kHz, and the byte offset where each ends.
func utterances(n int) ([]byte, []int) {
	var audio []byte
	var ends []int
	for i := range n {
		audio = append(audio, slngsim.Synthesize(fmt.Sprintf("Utterance %d is short.", i), "linear16", 16000)...)
		ends = append(ends, len(audio))
	}
	return audio, ends
}

// sttPaced sends audio in 20 ms chunks at playback speed through send,
// noting when each utterance's last byte was handed to send. The time is
// taken before the send, not after: a final can arrive before send returns.
func sttPaced(ctx context.Context, audio []byte, ends []int, send func([]byte) error, sentAt func(i int, t time.Time)) error {
	const chunk = 640 // 20 ms at 16 kHz LINEAR16
	next := time.Now()
	u := 0
	for off := 0; off < len(audio); off += chunk {
		end := min(off+chunk, len(audio))
		now := time.Now()
		for u < len(ends) && ends[u] <= end {
			sentAt(u, now)
			u++
		}
		if err := send(audio[off:end]); err != nil {
			return err
		}
		next = next.Add(20 * time.Millisecond)
		select {
		case <-time.After(time.Until(next)):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// sttRelay runs n real-time Transcribe streams through a relay (the
// gateway or the floor).
func sttRelay(ctx context.Context, conns []*grpc.ClientConn, n int, audio []byte, ends []int) *sttResult {
	r := &sttResult{finalDelay: &samples{}}
	fanOut(n, func(i int) {
		client := speechv1.NewSpeechToTextServiceClient(conns[i%len(conns)])
		stream, err := client.Transcribe(ctx)
		if err == nil {
			err = stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: &speechv1.RecognitionConfig{}}})
		}
		if err != nil {
			r.errors.Add(1)
			return
		}
		clock := newFinalClock(len(ends))
		recvDone := make(chan struct{})
		go func() {
			defer close(recvDone)
			eachMessage(stream.Recv, &r.errors, func(m *speechv1.TranscribeResponse) {
				if f := m.GetFinalTranscript(); f != nil && f.GetText() != "" {
					clock.final(r)
				}
			})
		}()
		err = sttPaced(ctx, audio, ends, func(b []byte) error {
			return stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: b}})
		}, clock.sentAt)
		if err != nil {
			r.errors.Add(1)
		}
		_ = stream.CloseSend()
		<-recvDone
	})
	return r
}

func sttDirect(ctx context.Context, client *slngclient.Client, n int, audio []byte, ends []int) *sttResult {
	r := &sttResult{finalDelay: &samples{}}
	fanOut(n, func(int) {
		s, err := client.DialSTT(ctx, slngclient.Endpoint{Model: "deepgram/nova:3"}, slngclient.STTConfig{Encoding: "linear16", SampleRate: 16000})
		if err != nil {
			r.errors.Add(1)
			return
		}
		defer s.CloseNow()
		clock := newFinalClock(len(ends))
		recvDone := make(chan struct{})
		go func() {
			defer close(recvDone)
			recv := func() (slngclient.STTEvent, error) { return s.Recv(ctx) }
			eachMessage(recv, &r.errors, func(ev slngclient.STTEvent) {
				if ev.Kind == slngclient.STTFinal && ev.Transcript.Text != "" {
					clock.final(r)
				}
			})
		}()
		err = sttPaced(ctx, audio, ends, func(b []byte) error { return s.SendAudio(ctx, b) }, clock.sentAt)
		if err != nil {
			r.errors.Add(1)
		}
		_ = s.CloseSend(ctx)
		<-recvDone
	})
	return r
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// eachMessage calls fn with every message recv returns until the stream
// ends, counting an end other than io.EOF in errs.
func eachMessage[T any](recv func() (T, error), errs *atomic.Int64, fn func(T)) {
	for {
		m, err := recv()
		if err != nil {
			if !isEOF(err) {
				errs.Add(1)
			}
			return
		}
		fn(m)
	}
}

// finalClock pairs each utterance's send time with its final transcript:
// the sender notes the times, the receiver the finals, in order.
type finalClock struct {
	sent []atomic.Int64 // Unix nanoseconds; 0 until sent
	next int            // the receiver's next utterance
}

func newFinalClock(utterances int) *finalClock {
	return &finalClock{sent: make([]atomic.Int64, utterances)}
}

func (c *finalClock) sentAt(i int, t time.Time) { c.sent[i].Store(t.UnixNano()) }

// final records the delay of the next utterance's final into r.
func (c *finalClock) final(r *sttResult) {
	if c.next >= len(c.sent) {
		return
	}
	if t := c.sent[c.next].Load(); t > 0 {
		r.finalDelay.add(time.Since(time.Unix(0, t)))
	}
	r.finals.Add(1)
	c.next++
}

// directClient is a slngclient for the simulator at url, with the same key
// the gateway uses.
func directClient(url string) (*slngclient.Client, error) {
	return slngclient.New(slngclient.Options{BaseURL: url, APIKey: "bench-key"})
}
