package slngclient_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// TestHosts: the world part picks the regional host unless a base URL is
// given, and bad names are refused.
func TestHosts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts slngclient.Options
		want string
	}{
		{slngclient.Options{}, "wss://na.api.slng.ai"},
		{slngclient.Options{WorldPart: "eu"}, "wss://eu.api.slng.ai"},
		{slngclient.Options{WorldPart: "AP"}, "wss://ap.api.slng.ai"},
		{slngclient.Options{WorldPart: "us-east"}, "wss://us-east.api.slng.ai"},
		{slngclient.Options{WorldPart: "eu", BaseURL: "wss://api.slng.ai/"}, "wss://api.slng.ai"},
		{slngclient.Options{BaseURL: "ws://127.0.0.1:8787"}, "ws://127.0.0.1:8787"},
	} {
		c, err := slngclient.New(tc.opts)
		if err != nil {
			t.Errorf("New(%+v) error = %v", tc.opts, err)
			continue
		}
		if got := c.Host(); got != tc.want {
			t.Errorf("New(%+v).Host() = %q, want %q", tc.opts, got, tc.want)
		}
	}
	for _, opts := range []slngclient.Options{
		{WorldPart: "e u"}, {WorldPart: "eu.evil.com/x"}, {WorldPart: "-eu"}, {WorldPart: "eu-"}, {WorldPart: strings.Repeat("a", 64)},
		{WorldPart: "eu:443"}, {RegionOverride: "eu north"}, {WorldPartOverride: "eu\r\nX-Evil: 1"}, {RegionOverride: strings.Repeat("r", 65)},
	} {
		if _, err := slngclient.New(opts); err == nil {
			t.Errorf("New(%+v) accepted", opts)
		}
	}
}

// TestHeaders: Authorization is the only header SLNG's current clients
// send; the override headers go only when asked for, per client or per
// session.
func TestHeaders(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts slngclient.Options
		ep   slngclient.Endpoint
		want map[string]string
	}{
		{"default", slngclient.Options{WorldPart: "eu"}, aura, nil},
		{"client overrides", slngclient.Options{RegionOverride: "eu-north-1", WorldPartOverride: "eu"}, aura,
			map[string]string{"X-Region-Override": "eu-north-1", "X-World-Part-Override": "eu"}},
		{"session overrides", slngclient.Options{RegionOverride: "eu-north-1"}, slngclient.Endpoint{Model: aura.Model, Region: "ap-south-1", WorldPart: "ap"},
			map[string]string{"X-Region-Override": "ap-south-1", "X-World-Part-Override": "ap"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			headers := make(chan http.Header, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				headers <- r.Header.Clone()
				http.Error(w, "enough", http.StatusForbidden)
			}))
			defer srv.Close()
			tc.opts.BaseURL = "ws" + strings.TrimPrefix(srv.URL, "http")
			tc.opts.APIKey = key
			c, err := slngclient.New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.DialTTS(testCtx(t), tc.ep, slngclient.TTSConfig{}); err == nil {
				t.Fatal("DialTTS() succeeded against a refusing server")
			}
			h := <-headers
			if got := h.Get("Authorization"); got != "Bearer "+key {
				t.Errorf("Authorization = %q", got)
			}
			for _, name := range []string{"X-Region-Override", "X-World-Part-Override", "X-Slng-Provider-Key", "X-Api-Key"} {
				if got := h.Get(name); got != tc.want[name] {
					t.Errorf("%s = %q, want %q", name, got, tc.want[name])
				}
			}
		})
	}
}

func TestRoutesText(t *testing.T) {
	t.Parallel()
	for _, r := range []slngclient.Routes{slngclient.RoutesBridge, slngclient.RoutesDirect} {
		b, err := r.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back slngclient.Routes
		if err := back.UnmarshalText(b); err != nil || back != r {
			t.Errorf("%s read back as %v, %v", b, back, err)
		}
	}
	var r slngclient.Routes
	if err := r.UnmarshalText([]byte("sideways")); err == nil {
		t.Error("UnmarshalText(sideways) succeeded")
	}
	if d := slngclient.DefaultOptions(); d.Routes != slngclient.RoutesBridge || d.WorldPart != slngclient.DefaultWorldPart || d.HandshakeTimeout != 10*time.Second || d.BaseURL != "" {
		t.Errorf("DefaultOptions() = %+v", d)
	}
}
