package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	prom "github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/testing/protocmp"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/internal/slngtest"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
	"github.com/speech-gateway/speech-gateway/slngsim"
)

// httpClient, for gateway processes, keeps no idle connections, which
// goleak would report.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) {
		if gatewayBinary.dir != "" {
			os.RemoveAll(gatewayBinary.dir)
		}
	}))
}

// syncBuffer collects the gateway's log output from its goroutines, and
// lets a test wait for a line.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // closed at the next Write; nil: nobody waits
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written != nil {
		close(s.written)
		s.written = nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits, within ctx, until the output contains substr.
func (s *syncBuffer) waitFor(ctx context.Context, t *testing.T, substr string) {
	t.Helper()
	for {
		s.mu.Lock()
		if strings.Contains(s.b.String(), substr) {
			s.mu.Unlock()
			return
		}
		if s.written == nil {
			s.written = make(chan struct{})
		}
		written := s.written
		s.mu.Unlock()
		select {
		case <-written:
		case <-ctx.Done():
			t.Fatalf("no log line with %q within the deadline:\n%s", substr, s)
		}
	}
}

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// testGateway is the gateway that run builds, from the same flags and
// environment, served by the same serve on in-memory listeners until the
// test ends: gRPC, admin, and debug with --debug-listen.
type testGateway struct {
	grpcLis, adminLis, debugLis *bufconn.Listener
	cancel                      context.CancelFunc
	done                        chan error
	logs                        *syncBuffer
}

func startGateway(t *testing.T, args []string, env map[string]string) *testGateway {
	t.Helper()
	return startGatewayOn(t, nil, args, env)
}

// startGatewayOn is startGateway serving gRPC on grpcLis, a real listener
// (loopback, TLS, a client in another process); nil serves it in memory
// (g.grpcLis, dial).
func startGatewayOn(t *testing.T, grpcLis net.Listener, args []string, env map[string]string) *testGateway {
	t.Helper()
	g := &testGateway{done: make(chan error, 1), logs: &syncBuffer{}}
	cfg, err := parseConfig(args, envFrom(env), g.logs)
	if err != nil {
		t.Fatal(err)
	}
	log, err := newLogger(cfg, g.logs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gw, err := newGateway(ctx, cfg, log, envFrom(env))
	if err != nil {
		if grpcLis != nil {
			grpcLis.Close()
		}
		t.Fatalf("gateway: %v\n%s", err, g.logs)
	}
	g.adminLis = bufconn.Listen(64 << 10)
	lis := listeners{grpc: grpcLis, admin: g.adminLis}
	if grpcLis == nil {
		g.grpcLis = bufconn.Listen(1 << 20)
		lis.grpc = g.grpcLis
	}
	if cfg.serve.debugListen != "" {
		g.debugLis = bufconn.Listen(64 << 10)
		lis.debug = g.debugLis
	}
	sctx, stop := context.WithCancel(context.Background())
	g.cancel = stop
	go func() {
		err := gw.serve(sctx, lis)
		gw.close()
		g.done <- err
	}()
	t.Cleanup(func() {
		g.cancel()
		<-g.done
	})
	return g
}

// stop does what SIGTERM does and waits for the gateway to stop.
func (g *testGateway) stop(t *testing.T) error {
	t.Helper()
	g.cancel()
	err := <-g.done
	g.done <- err // for Cleanup
	return err
}

// dial connects to the gateway's gRPC listener.
func (g *testGateway) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///gateway", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return g.grpcLis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// get fetches path from the HTTP server on lis (adminLis or debugLis).
func (g *testGateway) get(t *testing.T, lis *bufconn.Listener, path string) (int, string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return lis.DialContext(ctx) },
	}}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return get(ctx, t, client, "http://gateway"+path)
}

// dial connects to a gateway process's gRPC address.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestRunRefusesToStartWithoutKey(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"--listen", "127.0.0.1:0"}, envFrom(nil), &stderr)
	if err == nil || !strings.Contains(err.Error(), "no SLNG key") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v, want one line about the missing key", err)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--dev", "--slng-routes", "sideways"}, nil},
		{[]string{"--dev"}, map[string]string{"SPEECH_GATEWAY_MAX_STREAMS": "many"}},
		{[]string{"--dev", "--log-level", "loud"}, nil},
		{nil, map[string]string{"SPEECH_GATEWAY_SLNG_API_KEY": "k", "SPEECH_GATEWAY_SLNG_API_KEY_FILE": "/dev/null"}},
		{[]string{"--dev", "--default-tts-model", "not a model"}, nil},
		{[]string{"--dev", "--prewarm-tts", `{"model": 5}`}, nil},
		{[]string{"--dev"}, map[string]string{"SPEECH_GATEWAY_PREWARM_STT": `[{"format": {"sampleRateHz": 1}}]`}},
		{[]string{"--dev"}, map[string]string{"SPEECH_GATEWAY_POOL_WARM": "sometimes"}},
		{[]string{"--dev", "--debug-mem-profile-rate", "1"}, nil}, // without --debug-listen
		{[]string{"--dev", "--http2-stream-window", "1000"}, nil},
		{[]string{"--dev", "--http2-conn-window", "-1"}, nil}, // the stream window is fixed
		{[]string{"--dev", "--pool-max-sessions", "-1"}, nil}, // a limit that cannot be off
		{[]string{"--dev", "--http2-stream-window", "4294967296"}, nil},
		{[]string{"--dev"}, map[string]string{"ADMIN_PPROF": "true"}}, // retired: DEBUG_ADDR
		{[]string{"--dev", "--slng-world-part", "eu.example.com/x"}, nil},
		{[]string{"--dev", "--slng-region", "na"}, nil},
		{[]string{"--dev", "--dev-profile", "kindest"}, nil},
		{[]string{"--dev", "--slng-region-override", "eu north"}, nil},
		{[]string{"--dev", "--dial-rate", "NaN"}, nil},
		{[]string{"--dev"}, map[string]string{"SPEECH_GATEWAY_POOL_BACKGROUND_DIAL_RATE": "often"}},
		{[]string{"--dev", "--pool-background-dial-rate", "NaN"}, nil},
		{[]string{"--dev", "--max-header-list-size", "1024"}, nil},
		{[]string{"--dev", "--slng-handshake-timeout", "-1s"}, nil},
		{[]string{"--dev", "--redis-mode", "ring"}, nil},
		{[]string{"--dev", "unexpected"}, nil},
		{[]string{"--dev"}, map[string]string{"SPEECH_GATEWAY_MAX_HEADER_LIST_SIZE": "33554432"}},
	} {
		// A configuration accepted by mistake serves until the deadline.
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := run(ctx, append(tc.args, "--listen", "127.0.0.1:0", "--admin-listen", ""), envFrom(tc.env), io.Discard)
		cancel()
		if err == nil {
			t.Errorf("run(%v, %v) succeeded", tc.args, tc.env)
		}
	}
}

func TestParsePoolConfig(t *testing.T) {
	t.Parallel()
	c, err := parseConfig([]string{"--dev", "--pool-max-sessions", "7", "--dial-rate", "-1"}, envFrom(map[string]string{
		"SPEECH_GATEWAY_POOL_WARM":                 "false",
		"SPEECH_GATEWAY_POOL_BACKGROUND_DIAL_RATE": "0.5",
		"SPEECH_GATEWAY_PREWARM_TTS":               `[{"model": "deepgram/aura:2", "voice": "aura-2-thalia-en"}, {"format": {"encoding": "AUDIO_ENCODING_MULAW", "sampleRateHz": 8000}}]`,
		"SPEECH_GATEWAY_PREWARM_STT":               `{"model": "deepgram/nova:3", "enablePartials": true}`,
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.pool.DisableWarm || c.pool.MaxSessions != 7 || c.pool.DialRate != -1 || c.pool.BackgroundDialRate != 0.5 {
		t.Errorf("parsed warm off %v, max sessions %d, dial rates %v and %v", c.pool.DisableWarm, c.pool.MaxSessions, c.pool.DialRate, c.pool.BackgroundDialRate)
	}
	wantTTS := []*speechv1.SynthesisConfig{
		{Model: "deepgram/aura:2", Voice: "aura-2-thalia-en"},
		{Format: &speechv1.AudioFormat{Encoding: speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, SampleRateHz: 8000}},
	}
	if diff := cmp.Diff(wantTTS, c.prewarmTTS, protocmp.Transform()); diff != "" {
		t.Errorf("prewarm TTS (-want +got):\n%s", diff)
	}
	wantSTT := []*speechv1.RecognitionConfig{{Model: "deepgram/nova:3", EnablePartials: true}}
	if diff := cmp.Diff(wantSTT, c.prewarmSTT, protocmp.Transform()); diff != "" {
		t.Errorf("prewarm STT (-want +got):\n%s", diff)
	}
}

// TestRunServesWithKeyAndNeverLogsIt runs the gateway against a simulator
// that demands a key, does a round trip, and checks that the key appears in
// none of the gateway's logs, nor in the metrics.
// recvAll reads a response stream to its end and fails the test on an
// error.
func recvAll[T any](t *testing.T, recv func() (T, error)) []T {
	t.Helper()
	var out []T
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
}

func TestRunServesWithKeyAndNeverLogsIt(t *testing.T) {
	t.Parallel()
	const key = "sk_live_SENTINEL_9f8e7d6c5b4a"
	sim := slngtest.NewServer(t, slngsim.Options{APIKey: key})
	g := startGateway(t, []string{"--log-level", "debug"}, map[string]string{
		"SPEECH_GATEWAY_SLNG_API_KEY":  key,
		"SPEECH_GATEWAY_SLNG_BASE_URL": sim.URL(),
	})
	conn := g.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	stream, err := speechv1.NewTextToSpeechServiceClient(conn).SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: "Key check."})
	if err != nil {
		t.Fatal(err)
	}
	var audio []byte
	for _, m := range recvAll(t, stream.Recv) {
		audio = append(audio, m.GetAudio().GetData()...)
	}
	got, err := slngsim.Decode(audio, "linear16", 24000)
	if err != nil || got != "Key check." {
		t.Fatalf("decoded %q, %v", got, err)
	}
	// A failing call too: a model the simulator rejects.
	_, _ = speechv1.NewTextToSpeechServiceClient(conn).SynthesizeText(ctx, &speechv1.SynthesizeTextRequest{Text: "x", Config: &speechv1.SynthesisConfig{Model: "bad/model"}})

	_, metrics := g.get(t, g.adminLis, "/metrics")
	if !strings.Contains(metrics, "speech_gateway_streams_total") {
		t.Fatal("metrics lack speech_gateway_streams_total")
	}
	if err := g.stop(t); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.logs.String(), `"slng_host":"`+sim.URL()+`"`) {
		t.Errorf("no start-up log line with slng_host %s", sim.URL())
	}
	for name, text := range map[string]string{"logs": g.logs.String(), "metrics": metrics} {
		if strings.Contains(text, key) || strings.Contains(text, "SENTINEL") {
			t.Errorf("the SLNG key appears in the %s", name)
		}
	}
}

// TestRunDrainsOnSIGTERM starts a real-time synthesis, sends the equivalent
// of SIGTERM mid-turn, and checks that the turn still completes, the stream ends with SERVER_DRAINING, and run returns.
func TestRunDrainsOnSIGTERM(t *testing.T) {
	t.Parallel()
	g := startGateway(t, []string{"--dev", "--dev-realtime"}, nil)
	conn := g.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "slng.speech.v1.TextToSpeechService"})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", hc, err)
	}
	if code, _ := g.get(t, g.adminLis, "/readyz"); code != http.StatusOK {
		t.Fatalf("readyz = %d", code)
	}

	const text = "Draining must not cut this sentence short."
	stream, err := speechv1.NewTextToSpeechServiceClient(conn).Synthesize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Config{Config: &speechv1.SynthesisConfig{}}}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: text, Flush: true}}}); err != nil {
		t.Fatal(err)
	}
	var audio []byte
	for len(audio) == 0 {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		audio = append(audio, m.GetAudio().GetData()...)
	}

	stopped := make(chan error, 1)
	go func() { stopped <- g.stop(t) }()

	var ended bool
	var streamErr error
	for {
		m, err := stream.Recv()
		if err != nil {
			streamErr = err
			break
		}
		audio = append(audio, m.GetAudio().GetData()...)
		if m.GetAudioEnd() != nil {
			ended = true
		}
	}
	if !ended {
		t.Fatalf("the turn did not complete before the stream ended: %v", streamErr)
	}
	if st := status.Convert(streamErr); st.Code() != codes.Unavailable || !strings.Contains(st.Proto().String(), "SERVER_DRAINING") {
		t.Fatalf("stream ended with %v, want UNAVAILABLE SERVER_DRAINING", streamErr)
	}
	if got, err := slngsim.Decode(audio, "linear16", 24000); err != nil || got != text {
		t.Fatalf("decoded %q, %v; want the whole turn", got, err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("run returned %v", err)
	}
	if !strings.Contains(g.logs.String(), "stopped") {
		t.Fatal("no 'stopped' log line")
	}
}

// TestReadyzListsRefusedPrewarm: a prewarm configuration that SLNG refuses
// is logged and shown in /readyz, which stays ready.
func TestReadyzListsRefusedPrewarm(t *testing.T) {
	t.Parallel()
	const key = "sk_test_prewarm_refused"
	var dials atomic.Int32
	sim := slngtest.NewServer(t, slngsim.Options{APIKey: key, Script: func(ci slngsim.ConnInfo) slngsim.Fault {
		if ci.Model != "acme/unknown:1" {
			return slngsim.Fault{}
		}
		dials.Add(1)
		return slngsim.MustFaults("*=error:config_error@init,fatal,close=1008")["*"]
	}})
	g := startGateway(t, []string{"--prewarm-tts", `[{"model": "acme/unknown:1"}, {}]`}, map[string]string{
		"SPEECH_GATEWAY_SLNG_API_KEY":  key,
		"SPEECH_GATEWAY_SLNG_BASE_URL": sim.URL(),
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	g.logs.waitFor(ctx, t, "refused a prewarm configuration")
	code, body := g.get(t, g.adminLis, "/readyz")
	if code != http.StatusOK {
		t.Fatalf("readyz = %d with a refused prewarm configuration", code)
	}
	if want := "ok\nprewarm configuration refused by SLNG, not kept warm: tts acme/unknown:1 in region default: config_error\n"; body != want {
		t.Fatalf("readyz = %q, want %q", body, want)
	}
	// That it is not dialled again, however long the gateway waits, is
	// slngpool's TestPrewarmRejectedOnce.
	if n := dials.Load(); n != 1 {
		t.Errorf("SLNG saw %d dials of the refused configuration, want 1", n)
	}
}

func TestAdminHandler(t *testing.T) {
	t.Parallel()
	var serving atomic.Bool
	serving.Store(true)
	var rejected []slngpool.Rejection
	var fleetLine []string
	h := adminHandler(prom.NewRegistry(), &serving, rejectedDetail(func() []slngpool.Rejection { return rejected }),
		func() []string { return fleetLine })
	var body string
	get := func(path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		body = rec.Body.String()
		return rec.Code
	}
	if get("/healthz") != 200 || get("/readyz") != 200 || get("/metrics") != 200 {
		t.Fatal("admin endpoints not OK while serving")
	}
	if code := get("/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ on the admin port = %d, want 404: profiles have their own listener", code)
	}
	if get("/readyz"); body != "ok\n" {
		t.Fatalf("readyz = %q, want ok", body)
	}
	// A refused prewarm configuration is detail, not unreadiness.
	rejected = []slngpool.Rejection{{Kind: "tts", Model: "deepgram/aura:2", Region: "eu-north-1", Code: "config_error"}}
	if code := get("/readyz"); code != 200 || body != "ok\nprewarm configuration refused by SLNG, not kept warm: tts deepgram/aura:2 in region eu-north-1: config_error\n" {
		t.Fatalf("readyz = %d %q", code, body)
	}
	// Every detail, in order.
	fleetLine = []string{"fleet: shared limits in redis, 2 replicas"}
	if code := get("/readyz"); code != 200 || !strings.HasSuffix(body, "config_error\nfleet: shared limits in redis, 2 replicas\n") {
		t.Fatalf("readyz = %d %q", code, body)
	}
	serving.Store(false)
	if get("/readyz") != http.StatusServiceUnavailable || strings.Contains(body, "fleet") {
		t.Fatalf("readyz while draining: %q, want 503 without details", body)
	}
	if get("/healthz") != 200 {
		t.Fatal("healthz must stay OK while draining: the process is alive")
	}
}

func TestSetupTracing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env map[string]string
		on  bool
	}{
		{nil, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, false},
		{map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, false},
	} {
		tr, err := setupTracing(t.Context(), envFrom(tc.env))
		if err != nil {
			t.Fatal(err)
		}
		if (tr != nil) != tc.on {
			t.Errorf("env %v: tracing on = %v", tc.env, tr != nil)
		}
		if tr != nil {
			if err := tr.provider.Shutdown(t.Context()); err != nil {
				t.Errorf("shutdown: %v", err)
			}
		}
	}
}

func TestParseWindows(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args               []string
		stream, connection int
	}{
		{[]string{"--dev"}, 256 << 10, 4 << 20},
		{[]string{"--dev", "--http2-stream-window", "0", "--http2-conn-window", "0"}, 256 << 10, 4 << 20},
		{[]string{"--dev", "--http2-stream-window", "-1", "--http2-conn-window", "-1"}, -1, -1},
		{[]string{"--dev", "--http2-stream-window", "65536", "--http2-conn-window", "1048576"}, 64 << 10, 1 << 20},
	} {
		c, err := parseConfig(tc.args, envFrom(nil), io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if c.serve.streamWindow != tc.stream || c.serve.connWindow != tc.connection {
			t.Errorf("%v: windows %d and %d, want %d and %d", tc.args, c.serve.streamWindow, c.serve.connWindow, tc.stream, tc.connection)
		}
	}
}

// TestUploadLargerThanWindows sends a Transcribe stream many times larger
// than the smallest fixed HTTP/2 windows, unpaced, and gets every sentence
// back: the gateway's window updates keep a fast upload flowing.
func TestUploadLargerThanWindows(t *testing.T) {
	t.Parallel()
	g := startGateway(t, []string{"--dev", "--http2-stream-window", "65536", "--http2-conn-window", "65536"}, nil)
	conn := g.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var audio []byte
	var want []string
	for i := 0; len(audio) < 1<<20; i++ { // 1 MiB: 16 times each window
		s := "Sentence " + string(rune('a'+i%26)) + " of the upload."
		audio = append(audio, slngsim.Synthesize(s, "linear16", 16000)...)
		want = append(want, s)
	}
	stream, err := speechv1.NewSpeechToTextServiceClient(conn).Transcribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Config{Config: &speechv1.RecognitionConfig{}}}); err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() {
		for off := 0; off < len(audio); off += 8 << 10 {
			chunk := audio[off:min(off+8<<10, len(audio))]
			if err := stream.Send(&speechv1.TranscribeRequest{Request: &speechv1.TranscribeRequest_Audio{Audio: chunk}}); err != nil {
				sent <- err
				return
			}
		}
		sent <- stream.CloseSend()
	}()
	var got []string
	for _, m := range recvAll(t, stream.Recv) {
		if f := m.GetFinalTranscript(); f != nil && f.GetText() != "" {
			got = append(got, f.GetText())
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %d finals, want %d: %q", len(got), len(want), got)
	}
}

func TestParseHostConfig(t *testing.T) {
	t.Parallel()
	with := func(m map[string]string) map[string]string {
		out := map[string]string{"SPEECH_GATEWAY_SLNG_API_KEY": "k"}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	region := []string{"--slng-region", "us-east"}
	for _, tc := range []struct {
		name                                  string
		args                                  []string
		env                                   map[string]string
		baseURL, region, override, wpOverride string
		legacy                                bool
	}{
		{"a region, no overrides", region, with(nil), "", "us-east", "", "", false},
		{"region from the environment", nil, with(map[string]string{"SPEECH_GATEWAY_SLNG_REGION": "EU-North"}), "", "eu-north", "", "", false},
		{"region from its old name", nil, with(map[string]string{"SLNG_REGION": "us-west"}), "", "us-west", "", "", false},
		{"an unknown region is taken", []string{"--slng-region", "mars-1"}, with(nil), "", "mars-1", "", "", false},
		{"base URL alone", []string{"--slng-base-url", "wss://us-west.api.slng.ai"}, with(nil), "wss://us-west.api.slng.ai", "", "", "", false},
		{"overrides", append(region, "--slng-region-override", "eu-north-1", "--slng-world-part-override", "eu"), with(nil), "", "us-east", "eu-north-1", "eu", false},
		{"overrides from the environment", region, with(map[string]string{"SPEECH_GATEWAY_SLNG_REGION_OVERRIDE": "eu-north-1", "SPEECH_GATEWAY_SLNG_WORLD_PART_OVERRIDE": "eu"}), "", "us-east", "eu-north-1", "eu", false},
		{"deprecated --slng-world-part naming a region", []string{"--slng-world-part", "eu-west"}, with(nil), "", "eu-west", "", "", true},
		{"deprecated SLNG_WORLD_PART naming a region", nil, with(map[string]string{"SLNG_WORLD_PART": "gb"}), "", "gb", "", "", true},
		{"both names, the same value", []string{"--slng-world-part", "jp", "--slng-region", "jp"}, with(nil), "", "jp", "", "", true},
		{"--dev needs no region", []string{"--dev"}, nil, "", "", "", "", false},
	} {
		c, err := parseConfig(tc.args, envFrom(tc.env), io.Discard)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if c.client.BaseURL != tc.baseURL || c.client.Region != tc.region || c.client.RegionOverride != tc.override ||
			c.client.WorldPartOverride != tc.wpOverride || (c.legacyWorldPart != "") != tc.legacy {
			t.Errorf("%s: parsed base %q region %q overrides %q %q legacy %q", tc.name,
				c.client.BaseURL, c.client.Region, c.client.RegionOverride, c.client.WorldPartOverride, c.legacyWorldPart)
		}
	}
	// SLNG_REGION, the region's name before SPEECH_GATEWAY_SLNG_REGION, is
	// read with a warning; it no longer names --slng-region-override.
	c, err := parseConfig(nil, envFrom(with(map[string]string{"SLNG_REGION": "us-west"})), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if w := "SLNG_REGION is read for this release only: rename it SPEECH_GATEWAY_SLNG_REGION"; c.client.RegionOverride != "" ||
		!strings.Contains(strings.Join(c.warnings, "\n"), w) {
		t.Errorf("SLNG_REGION: override %q, warnings %q; want no override and %q", c.client.RegionOverride, c.warnings, w)
	}
}

// TestRegionRefusals: outside --dev, a gateway with neither a region nor a
// base URL refuses to start and lists the regions; a world part named as
// a region is refused with why.
func TestRegionRefusals(t *testing.T) {
	t.Parallel()
	key := map[string]string{"SPEECH_GATEWAY_SLNG_API_KEY": "k"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{nil, key, []string{"no SLNG region", "us-east", "eu-north", "--slng-region (SPEECH_GATEWAY_SLNG_REGION)"}},
		{[]string{"--slng-region", "na"}, key, []string{`"na" is a world part`, "X-World-Part-Override", "us-east"}},
		{nil, map[string]string{"SPEECH_GATEWAY_SLNG_API_KEY": "k", "SPEECH_GATEWAY_SLNG_REGION": "EU"}, []string{`"eu" is a world part`}},
		{nil, map[string]string{"SPEECH_GATEWAY_SLNG_API_KEY": "k", "SLNG_REGION": "ap"}, []string{`"ap" is a world part`}},
		{[]string{"--slng-world-part", "ap"}, key, []string{"--slng-world-part (SPEECH_GATEWAY_SLNG_WORLD_PART)", `"ap" is a world part`}},
		{nil, map[string]string{"SPEECH_GATEWAY_SLNG_API_KEY": "k", "SLNG_WORLD_PART": "na"}, []string{`"na" is a world part`}},
		{[]string{"--slng-world-part", "us-east", "--slng-region", "us-west"}, key, []string{"set one of them"}},
		{[]string{"--slng-region", "us-east.evil.com"}, key, []string{"not a host prefix"}},
	} {
		_, err := parseConfig(tc.args, envFrom(tc.env), io.Discard)
		if err == nil {
			t.Errorf("parseConfig(%v, %v) succeeded", tc.args, tc.env)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("parseConfig(%v, %v) = %v, want it to say %q", tc.args, tc.env, err, w)
			}
		}
	}
}

// TestRunLogsRegionalHost: with no base URL, the gateway uses and names the
// host of its region (nothing dials it until a stream comes), and warns of
// a region SLNG's region page does not list and of the deprecated name.
func TestRunLogsRegionalHost(t *testing.T) {
	t.Parallel()
	g := startGateway(t, []string{"--slng-world-part", "us-east-1", "--slng-region-override", "eu-north-1"}, map[string]string{"SPEECH_GATEWAY_SLNG_API_KEY": "sk_SENTINEL"})
	if err := g.stop(t); err != nil {
		t.Fatal(err)
	}
	logs := g.logs.String()
	for _, want := range []string{`"slng_host":"wss://us-east-1.api.slng.ai"`, `"slng_region":"us-east-1"`, `"slng_region_override":"eu-north-1"`,
		"--slng-world-part (SPEECH_GATEWAY_SLNG_WORLD_PART) is deprecated", "not one SLNG's region page lists"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the start-up logs lack %s:\n%s", want, logs)
		}
	}
}

// TestManifestRegion: the shipped Deployment names a region the gateway
// starts with, one SLNG's region page lists, by the names the gateway reads
// now: no world part, and no old variable name.
func TestManifestRegion(t *testing.T) {
	t.Parallel()
	env := map[string]string{"SPEECH_GATEWAY_SLNG_API_KEY": "k"}
	for _, e := range list(gatewayContainer(t), "env") {
		name, _ := field(e, "name").(string)
		if v, ok := field(e, "value").(string); ok && strings.Contains(name, "SLNG_") && name != "SPEECH_GATEWAY_SLNG_API_KEY_FILE" {
			env[name] = v // the key file is the Secret's mount
		}
	}
	c, err := parseConfig(nil, envFrom(env), io.Discard)
	if err != nil {
		t.Fatalf("the manifest's settings: %v", err)
	}
	if !slngclient.IsKnownRegion(c.client.Region) || c.legacyWorldPart != "" || len(c.warnings) > 0 {
		t.Errorf("the manifest's region is %q (deprecated name %q, warnings %q), want one SLNG lists by its name now",
			c.client.Region, c.legacyWorldPart, c.warnings)
	}
}
