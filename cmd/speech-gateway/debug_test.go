package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/test/bufconn"
)

// TestDebugListenerServesProfiles: with --debug-listen, profiles are served
// there and nowhere else; the admin port, which the Kubernetes Service
// exposes, keeps metrics and health only.
func TestDebugListenerServesProfiles(t *testing.T) {
	t.Parallel()
	g := startGateway(t, []string{"--dev", "--log-format", "json", "--debug-listen", "127.0.0.1:0"}, nil)
	if g.debugLis == nil {
		t.Fatal("no debug listener with --debug-listen")
	}
	for _, tc := range []struct {
		lis  *bufconn.Listener
		path string
		want int
	}{
		{g.debugLis, "/debug/pprof/", http.StatusOK},
		{g.debugLis, "/debug/pprof/goroutine?debug=1", http.StatusOK},
		{g.debugLis, "/debug/pprof/heap", http.StatusOK},
		{g.debugLis, "/debug/pprof/symbol", http.StatusOK},
		{g.debugLis, "/debug/pprof/cmdline", http.StatusNotFound},
		{g.debugLis, "/metrics", http.StatusNotFound},
		{g.adminLis, "/debug/pprof/", http.StatusNotFound},
		{g.adminLis, "/debug/pprof/heap", http.StatusNotFound},
		{g.adminLis, "/metrics", http.StatusOK},
	} {
		if got, _ := g.get(t, tc.lis, tc.path); got != tc.want {
			t.Errorf("GET %s on %s = %d, want %d", tc.path, map[*bufconn.Listener]string{g.debugLis: "the debug listener", g.adminLis: "the admin port"}[tc.lis], got, tc.want)
		}
	}
	if _, body := g.get(t, g.debugLis, "/debug/pprof/"); !strings.Contains(body, "goroutine") {
		t.Errorf("the pprof index lists no goroutine profile:\n%s", body)
	}
	if err := g.stop(t); err != nil {
		t.Fatal(err)
	}
	if addr := g.debugLis.Addr().String(); !strings.Contains(g.logs.String(), `"debug":"`+addr+`"`) {
		t.Errorf("the serving log line does not name the debug address %s", addr)
	}
}

// TestListenOpensWhatIsConfigured: run listens for gRPC always, and for
// the admin port and profiles only where an address is set.
func TestListenOpensWhatIsConfigured(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args         []string
		admin, debug bool
	}{
		{[]string{"--admin-listen", ""}, false, false},
		{[]string{"--admin-listen", "127.0.0.1:0"}, true, false},
		{[]string{"--admin-listen", "", "--debug-listen", "127.0.0.1:0"}, false, true},
	} {
		cfg, err := parseConfig(append([]string{"--dev", "--listen", "127.0.0.1:0"}, tc.args...), envFrom(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		lis, err := listen(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if lis.grpc == nil || (lis.admin != nil) != tc.admin || (lis.debug != nil) != tc.debug {
			t.Errorf("%v: listeners %+v, want admin %v, debug %v", tc.args, lis, tc.admin, tc.debug)
		}
		lis.close()
	}
	// One address taken: nothing stays open.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg, err := parseConfig([]string{"--dev", "--listen", "127.0.0.1:0", "--admin-listen", taken.Addr().String()}, envFrom(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listen(cfg); err == nil || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Errorf("listen on a taken address: %v, want an error naming it", err)
	}
}

// TestRetiredProfilingVariables: a manifest that still asks for profiles on
// the admin port stops the start-up with a message naming
// SPEECH_GATEWAY_DEBUG_LISTEN; one
// that asked for none starts.
func TestRetiredProfilingVariables(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		fail bool
	}{
		{map[string]string{"ADMIN_PPROF": "true"}, true},
		{map[string]string{"ADMIN_PPROF": "1"}, true},
		{map[string]string{"ADMIN_MEM_PROFILE_RATE": "1"}, true},
		{map[string]string{"ADMIN_PPROF": "false", "ADMIN_MEM_PROFILE_RATE": "0"}, false},
	} {
		_, err := parseConfig([]string{"--dev"}, envFrom(tc.env), io.Discard)
		if tc.fail && (err == nil || !strings.Contains(err.Error(), "SPEECH_GATEWAY_DEBUG_LISTEN")) {
			t.Errorf("env %v: %v, want an error naming SPEECH_GATEWAY_DEBUG_LISTEN", tc.env, err)
		}
		if !tc.fail && err != nil {
			t.Errorf("env %v: %v", tc.env, err)
		}
	}
}
