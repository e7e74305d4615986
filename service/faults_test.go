package service

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// TestFaultMatrix runs, for every simulator fault, FAULT_STREAMS (default
// 2) SynthesizeText and Transcribe streams at once. Each stream must either
// complete with exactly its own audio or transcript, or end with one of the
// statuses the fault may cause (docs/errors.md), within its deadline. With
// -v it prints the matrix of fault x outcome; `make faults` runs it large.
func TestFaultMatrix(t *testing.T) {
	t.Parallel()
	n := 2
	if v, err := strconv.Atoi(os.Getenv("FAULT_STREAMS")); err == nil && v > 0 {
		n = v
	}
	const (
		ok          = "OK"
		unavailable = "Unavailable/UPSTREAM_UNAVAILABLE"
		protocol    = "Unavailable/UPSTREAM_PROTOCOL_ERROR"
		expired     = "Unavailable/UPSTREAM_SESSION_EXPIRED"
		unauth      = "Internal/UPSTREAM_AUTH_FAILED" // the gateway's own key
		rateLimited = "ResourceExhausted/UPSTREAM_RATE_LIMITED"
		rejected    = "InvalidArgument/UPSTREAM_REQUEST_REJECTED"
		config      = "InvalidArgument/UPSTREAM_CONFIG_REJECTED"
		unknown     = "Unknown/UPSTREAM_UNKNOWN_ERROR"
		deadline    = "DeadlineExceeded"
		truncated   = "OK+truncated"
	)
	// For each fault: the outcomes allowed for SynthesizeText and for
	// Transcribe. Faults after the first audio cannot be hidden from a
	// Synthesize caller; Transcribe reconnects and replays, so it may
	// complete exactly, or give up when every new session fails too.
	type row struct {
		fault    string
		tts, stt []string
	}
	rows := []row{
		{"handshake:401", []string{unauth}, []string{unauth}},
		{"handshake:403", []string{unauth}, []string{unauth}},
		{"handshake:429", []string{rateLimited}, []string{rateLimited}},
		{"handshake:503", []string{unavailable}, []string{unavailable}},
		{"drop@chunks:2", []string{unavailable}, []string{ok, unavailable}},
		{"stall@chunks:2", []string{deadline}, []string{deadline}},
		{"malformed@chunks:2", []string{ok}, []string{ok}},
		{"oversized@chunks:2", []string{protocol}, []string{ok, protocol, unavailable}},
		{"unknown@chunks:2", []string{ok}, []string{ok}},
		// A clean close after audio is how some routes end a turn: the
		// gateway cannot tell it from a close in the middle of the audio,
		// so the turn ends short (docs/upstream.md).
		{"close:1000@chunks:2", []string{truncated}, []string{ok, unavailable, ok + "+untranscribed_audio"}},
		// Reaps: SLNG's housekeeping, never the caller's fault.
		{"close:1008@chunks:2", []string{expired}, []string{ok, expired}},
		// 1011 in the middle of the audio is a provider crashing the
		// stream, not a reap.
		{"close:1011@chunks:2", []string{unavailable}, []string{ok, unavailable}},
		{"close:1012@chunks:2", []string{expired}, []string{ok, expired}},
		{"close:1001@chunks:2", []string{expired}, []string{ok, expired}},
		// An error frame in the middle of a turn fails that turn.
		{"error:pronunciation_not_found@chunks:2", []string{rejected}, []string{ok}},
		{"error:auth_error@chunks:2,fatal,close=1008", []string{unauth}, []string{unauth}},
		{"error:config_error@chunks:2,fatal,close=1008", []string{config}, []string{config}},
		{"error:invalid_request@chunks:2,fatal,close=1008", []string{rejected}, []string{rejected}},
		{"error:payload_too_large@chunks:2,fatal,close=1008", []string{rejected}, []string{rejected}},
		{"error:rate_limit_exceeded@chunks:2,fatal,close=1008", []string{rateLimited}, []string{ok, rateLimited}},
		{"error:idle_timeout_exceeded@chunks:2,fatal,close=1008", []string{expired}, []string{ok, expired}},
		{"error:max_connection_duration_exceeded@chunks:2,fatal,close=1008", []string{expired}, []string{ok, expired}},
		{"error:brand_new_code@chunks:2,fatal", []string{unknown}, []string{unknown}},
	}
	for _, code := range []string{"provider_error", "backend_connection_failed", "backend_error", "not_ready",
		"backpressure", "stt_metering_unavailable", "translation_error"} {
		rows = append(rows, row{"error:" + code + "@chunks:2,fatal", []string{unavailable}, []string{ok, unavailable}})
	}

	var mu sync.Mutex
	matrix := map[string]map[string]int{} // fault -> "rpc outcome" -> count
	t.Cleanup(func() {
		var b strings.Builder
		fmt.Fprintf(&b, "fault matrix, %d streams of each RPC per fault:\n", n)
		faults := make([]string, 0, len(matrix))
		for f := range matrix {
			faults = append(faults, f)
		}
		sort.Strings(faults)
		for _, f := range faults {
			var cells []string
			for k, v := range matrix[f] {
				cells = append(cells, fmt.Sprintf("%s x%d", k, v))
			}
			sort.Strings(cells)
			fmt.Fprintf(&b, "  %-66s %s\n", f, strings.Join(cells, ", "))
		}
		t.Log(b.String())
	})
	record := func(fault, rpc, outcome string) {
		mu.Lock()
		defer mu.Unlock()
		if matrix[fault] == nil {
			matrix[fault] = map[string]int{}
		}
		matrix[fault][rpc+" "+outcome]++
	}

	for _, r := range rows {
		t.Run(r.fault, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, slngsim.Options{Faults: slngsim.MustFaults("*=" + r.fault)}, Config{FinalsTimeout: 3 * time.Second})
			timeout := 10 * time.Second
			if strings.HasPrefix(r.fault, "stall") {
				timeout = time.Second
			}
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(2)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), timeout)
					defer cancel()
					text := fmt.Sprintf("Stream %d speaks only its own words.", i)
					start := time.Now()
					stream, err := h.tts.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: text})
					var resps []*speechv1.SynthesizeResponse
					if err == nil {
						resps, err = recvAll(t, stream.Recv)
					}
					outcome := outcomeOf(err)
					got, _ := slngsim.Decode(audioOf(resps), "linear16", 24000)
					if outcome == ok && got != text && strings.HasPrefix(text, strings.TrimRight(got, "\x00")) {
						outcome = truncated
					}
					record(r.fault, "tts", outcome)
					switch {
					case !slices.Contains(r.tts, outcome):
						t.Errorf("SynthesizeText: %s (%v), want one of %v", outcome, err, r.tts)
					case outcome == ok && got != text:
						t.Errorf("SynthesizeText completed with the wrong audio: %q", got)
					case !strings.HasPrefix(text, strings.TrimRight(got, "\x00")):
						t.Errorf("SynthesizeText delivered audio that is not its own: %q", got)
					case time.Since(start) > timeout+time.Second:
						t.Errorf("SynthesizeText took %s, past its deadline", time.Since(start))
					}
				}()
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), timeout)
					defer cancel()
					var texts []string
					var audio []byte
					for j := range 3 {
						s := fmt.Sprintf("Caller %d sentence %d.", i, j)
						texts = append(texts, s)
						audio = append(audio, slngsim.Synthesize(s, "linear16", 16000)...)
					}
					start := time.Now()
					resps, err := h.transcribe(t, ctx, &speechv1.RecognitionConfig{}, audio, 1600)
					outcome := outcomeOf(err)
					want := strings.Join(texts, " ")
					got := finalText(resps)
					warned := slices.ContainsFunc(resps, func(m *speechv1.TranscribeResponse) bool {
						return m.GetWarning().GetCode() == "untranscribed_audio"
					})
					if warned {
						// SLNG closed normally over our close: the caller
						// is told that audio went untranscribed.
						outcome += "+untranscribed_audio"
					}
					record(r.fault, "stt", outcome)
					switch {
					case !slices.Contains(r.stt, outcome):
						t.Errorf("Transcribe: %s (%v), want one of %v", outcome, err, r.stt)
					case outcome == ok && got != want:
						t.Errorf("Transcribe completed with the wrong finals: %q, want %q", got, want)
					case !strings.HasPrefix(want, got):
						t.Errorf("Transcribe delivered finals that are not its own: %q", got)
					case time.Since(start) > timeout+time.Second:
						t.Errorf("Transcribe took %s, past its deadline", time.Since(start))
					}
				}()
			}
			wg.Wait()
		})
	}
}

// outcomeOf names how a stream ended: "OK", or the code and reason.
func outcomeOf(err error) string {
	if err == nil {
		return "OK"
	}
	st, ok := status.FromError(err)
	if !ok {
		return "not a status: " + err.Error()
	}
	if st.Code() == codes.DeadlineExceeded {
		return "DeadlineExceeded"
	}
	info, _ := details(st)
	return st.Code().String() + "/" + info.GetReason()
}
