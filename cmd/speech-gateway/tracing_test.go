package main

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// otlpCollector is an OTLP/HTTP trace receiver: it takes POST /v1/traces
// in protobuf, as a collector on :4318 does, and hands each request on.
func otlpCollector(t *testing.T) (url string, requests <-chan *coltracepb.ExportTraceServiceRequest) {
	t.Helper()
	ch := make(chan *coltracepb.ExportTraceServiceRequest, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// No keep-alive: the exporter keeps idle connections otherwise,
		// whose goroutines would outlive the test.
		w.Header().Set("Connection", "close")
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("collector got %s %s (%s), want POST /v1/traces in protobuf", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
			http.Error(w, "not an OTLP trace export", http.StatusBadRequest)
			return
		}
		b, err := io.ReadAll(r.Body)
		req := &coltracepb.ExportTraceServiceRequest{}
		if err == nil {
			err = proto.Unmarshal(b, req)
		}
		if err != nil {
			t.Errorf("collector: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case ch <- req:
		default:
			t.Error("collector: more requests than the test expects")
		}
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, ch
}

// TestTracingOverOTLPHTTP: with the standard variables asking for OTLP
// over HTTP and B3 propagation, the gateway continues the caller's B3
// trace and exports the stream's span and its SLNG session's span to the
// collector's /v1/traces, under the service name the environment gives.
// Not parallel: OpenTelemetry's exporters read the process environment.
func TestTracingOverOTLPHTTP(t *testing.T) {
	url, requests := otlpCollector(t)
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": url,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_PROPAGATORS":            "b3",
		"OTEL_SERVICE_NAME":           "speech-gateway-under-test",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	g := startGateway(t, []string{"--dev"}, env)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	g.logs.waitFor(ctx, t, `"protocol": "http/protobuf"`)

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	callCtx := metadata.AppendToOutgoingContext(ctx, "b3", traceID+"-"+parentID+"-1")
	stream, err := speechv1.NewTextToSpeechServiceClient(g.dial(t)).SynthesizeText(callCtx, &speechv1.SynthesizeTextRequest{Text: "Traced."})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	// Shutting down flushes the spans the batcher holds.
	if err := g.stop(t); err != nil {
		t.Fatal(err)
	}

	spans := map[string]string{} // name -> trace id
	service := ""
	for len(requests) > 0 {
		req := <-requests
		for _, rs := range req.GetResourceSpans() {
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					spans[s.GetName()] = hex.EncodeToString(s.GetTraceId())
				}
			}
		}
	}
	if service != "speech-gateway-under-test" {
		t.Errorf("service.name = %q, want OTEL_SERVICE_NAME's", service)
	}
	for _, name := range []string{"slng.speech.v1.TextToSpeechService/SynthesizeText", "slng.session"} {
		got, ok := spans[name]
		switch {
		case !ok:
			t.Errorf("no %s span among %v", name, spans)
		case got != traceID:
			t.Errorf("%s span in trace %s, want the caller's B3 trace %s", name, got, traceID)
		}
	}
}

// TestSetupTracingRefusesUnknownSettings: an exporter, protocol or
// propagator the libraries do not know stops the start-up.
func TestSetupTracingRefusesUnknownSettings(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin-typo"}, "zipkin-typo"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, "carrier-pigeon"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_PROPAGATORS": "tracecontext, b4"}, "b4"},
	} {
		t.Run(strings.Join(mapValues(tc.env), ","), func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			tr, err := setupTracing(t.Context(), envFrom(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one naming %q", err, tc.want)
			}
			if tr != nil {
				_ = tr.provider.Shutdown(t.Context())
			}
		})
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
