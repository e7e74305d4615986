package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestDebugListenerServesProfiles: with --debug-listen, profiles are served
// there and nowhere else; the admin port, which the Kubernetes Service
// exposes, keeps metrics and health only.
func TestDebugListenerServesProfiles(t *testing.T) {
	t.Parallel()
	g := startGateway(t, []string{"--dev", "--log-format", "json", "--debug-listen", "127.0.0.1:0"}, nil)
	if g.debug == "" {
		t.Fatal("no debug address reported")
	}
	for _, tc := range []struct {
		addr, path string
		want       int
	}{
		{g.debug, "/debug/pprof/", http.StatusOK},
		{g.debug, "/debug/pprof/goroutine?debug=1", http.StatusOK},
		{g.debug, "/debug/pprof/heap", http.StatusOK},
		{g.debug, "/debug/pprof/symbol", http.StatusOK},
		{g.debug, "/debug/pprof/cmdline", http.StatusNotFound},
		{g.debug, "/metrics", http.StatusNotFound},
		{g.admin, "/debug/pprof/", http.StatusNotFound},
		{g.admin, "/debug/pprof/heap", http.StatusNotFound},
		{g.admin, "/metrics", http.StatusOK},
	} {
		if got := httpStatus(t, "http://"+tc.addr+tc.path); got != tc.want {
			t.Errorf("GET %s on %s = %d, want %d", tc.path, map[string]string{g.debug: "the debug listener", g.admin: "the admin port"}[tc.addr], got, tc.want)
		}
	}
	resp, err := httpClient.Get("http://" + g.debug + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "goroutine") {
		t.Errorf("the pprof index lists no goroutine profile:\n%s", body)
	}
	if err := g.stop(t); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.logs.String(), `"debug":"`+g.debug+`"`) {
		t.Errorf("the serving log line does not name the debug address %s", g.debug)
	}
}

// TestNoDebugListenerByDefault: without --debug-listen nothing serves
// profiles.
func TestNoDebugListenerByDefault(t *testing.T) {
	t.Parallel()
	g := startGateway(t, []string{"--dev"}, nil)
	if g.debug != "" {
		t.Fatalf("debug listener on %s without --debug-listen", g.debug)
	}
	if got := httpStatus(t, "http://"+g.admin+"/debug/pprof/"); got != http.StatusNotFound {
		t.Fatalf("GET /debug/pprof/ on the admin port = %d, want 404", got)
	}
}

// TestRetiredProfilingVariables: a manifest that still asks for profiles on
// the admin port stops the start-up with a message naming DEBUG_ADDR; one
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
		if tc.fail && (err == nil || !strings.Contains(err.Error(), "DEBUG_ADDR")) {
			t.Errorf("env %v: %v, want an error naming DEBUG_ADDR", tc.env, err)
		}
		if !tc.fail && err != nil {
			t.Errorf("env %v: %v", tc.env, err)
		}
	}
}
