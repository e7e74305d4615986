package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// soak churns streams through one gateway for d: each of n workers runs
// real-time SynthesizeText and Transcribe streams back to back. It prints
// the gateway's RSS and goroutines at the start, at the end, and once the
// load has stopped, with the errors seen.
func (b *bench) soak(ctx context.Context, d time.Duration, n int) error {
	sim, err := b.sim(ctx, "--realtime", "--max-duration", "1h")
	if err != nil {
		return err
	}
	gw, err := b.keep(startGateway(ctx, b.relayCPU(), b.o.gatewayBin, sim.addr, "--admin-listen", "127.0.0.1:0"))
	if err != nil {
		return err
	}
	conns, err := gatewayClients(gw.addr, 4, b.o.clientWindow)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	snapshot := func(label string) map[string]any {
		u, _ := gw.usage()
		g := goroutines(ctx, gw.admin)
		b.printf("%-22s rss %7.1f MiB  goroutines %6d\n", label, float64(u.rss)/(1<<20), g)
		return map[string]any{"rss_mib": float64(u.rss) / (1 << 20), "goroutines": g}
	}
	b.printf("Soak: %d workers churning real-time streams for %s\n", n, d)
	idle := snapshot("before load")
	audio, ends := utterances(2)
	var streams, failures atomic.Int64
	var errMu sync.Mutex
	errs := map[string]int{}
	lctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	// The load runs beside the snapshots and is joined before the last two.
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		fanOut(n, func(i int) {
			tts := speechv1.NewTextToSpeechServiceClient(conns[i%len(conns)])
			stt := speechv1.NewSpeechToTextServiceClient(conns[i%len(conns)])
			for j := 0; lctx.Err() == nil; j++ {
				var err error
				if (i+j)%2 == 0 {
					err = soakTTS(lctx, tts)
				} else {
					err = soakSTT(lctx, stt, audio, ends)
				}
				if lctx.Err() != nil {
					return // the soak ended mid-stream: not a failure
				}
				streams.Add(1)
				if err != nil {
					failures.Add(1)
					errMu.Lock()
					if len(errs) < 20 || errs[err.Error()] > 0 {
						errs[err.Error()]++
					}
					errMu.Unlock()
				}
			}
		})
	}()
	time.Sleep(min(d/10, 30*time.Second))
	start := snapshot("after warm-up")
	<-loadDone
	end := snapshot("at the end")
	time.Sleep(5 * time.Second)
	after := snapshot("5 s after the load")
	b.printf("streams completed %d, failed %d\n", streams.Load(), failures.Load())
	for e, n := range errs {
		b.printf("  %6d  %s\n", n, e)
	}
	b.printf("\n")
	b.res["soak"] = map[string]any{
		"duration_seconds": d.Seconds(), "workers": n, "streams": streams.Load(), "errors": failures.Load(),
		"before": idle, "start": start, "end": end, "after": after, "error_kinds": errs,
	}
	return nil
}

func soakTTS(ctx context.Context, client speechv1.TextToSpeechServiceClient) error {
	stream, err := client.SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: "A short churning turn of about one second."})
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if isEOF(err) {
				return nil
			}
			return err
		}
	}
}

// goroutines reads go_goroutines from the gateway's /metrics.
func goroutines(ctx context.Context, admin string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return -1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return -1
}

func soakSTT(ctx context.Context, client speechv1.SpeechToTextServiceClient, audio []byte, ends []int) error {
	stream, err := client.Transcribe(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: &speechv1.RecognitionConfig{}}}); err != nil {
		return err
	}
	sendErr := make(chan error, 1)
	go func() {
		err := sttPaced(ctx, audio, ends, func(b []byte) error {
			return stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: b}})
		}, func(int, time.Time) {})
		if err == nil {
			err = stream.CloseSend()
		}
		sendErr <- err
	}()
	finals := 0
	for {
		m, err := stream.Recv()
		if isEOF(err) {
			break
		}
		if err != nil {
			<-sendErr
			return err
		}
		if f := m.GetFinalTranscript(); f != nil && f.GetText() != "" {
			finals++
		}
	}
	if err := <-sendErr; err != nil && !isEOF(err) {
		return err
	}
	if finals != len(ends) {
		return fmt.Errorf("%d finals for %d utterances", finals, len(ends))
	}
	return nil
}
