package slngclient_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// TestHosts: the region picks the host unless a base URL is given; there
// is no default region, world parts are refused as hosts, and bad names
// are refused.
func TestHosts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts         slngclient.Options
		want, region string
	}{
		{slngclient.Options{Region: "us-east"}, "wss://us-east.api.slng.ai", "us-east"},
		{slngclient.Options{Region: "EU-North"}, "wss://eu-north.api.slng.ai", "eu-north"},
		{slngclient.Options{Region: "mars-1"}, "wss://mars-1.api.slng.ai", "mars-1"}, // regions are added
		{slngclient.Options{Region: "jp", BaseURL: "wss://api.slng.ai/"}, "wss://api.slng.ai", "jp"},
		{slngclient.Options{BaseURL: "wss://gb.api.slng.ai"}, "wss://gb.api.slng.ai", "gb"},
		{slngclient.Options{BaseURL: "ws://127.0.0.1:8787"}, "ws://127.0.0.1:8787", ""},
	} {
		c, err := slngclient.New(tc.opts)
		if err != nil {
			t.Errorf("New(%+v) error = %v", tc.opts, err)
			continue
		}
		if got := c.Host(); got != tc.want || c.Region() != tc.region {
			t.Errorf("New(%+v): host %q region %q, want %q %q", tc.opts, got, c.Region(), tc.want, tc.region)
		}
	}
	for _, opts := range []slngclient.Options{
		{}, {Region: "na"}, {Region: "EU"}, {Region: "ap"},
		{Region: "e u"}, {Region: "eu.evil.com/x"}, {Region: "-eu"}, {Region: "eu-"}, {Region: strings.Repeat("a", 64)},
		{Region: "eu:443"}, {Region: "us-east", RegionOverride: "eu north"}, {Region: "us-east", WorldPartOverride: "eu\r\nX-Evil: 1"},
		{Region: "us-east", RegionOverride: strings.Repeat("r", 65)},
	} {
		if _, err := slngclient.New(opts); err == nil {
			t.Errorf("New(%+v) accepted", opts)
		}
	}
	if _, err := slngclient.New(slngclient.Options{Region: "na"}); err == nil || !strings.Contains(err.Error(), "world part") {
		t.Errorf("New(na) error = %v, want it to say why", err)
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
		{"default", slngclient.Options{Region: "eu-west"}, aura, nil},
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
	if d := slngclient.DefaultOptions(); d.Routes != slngclient.RoutesBridge || d.Region != "" || d.HandshakeTimeout != 10*time.Second || d.BaseURL != "" {
		t.Errorf("DefaultOptions() = %+v", d)
	}
}
