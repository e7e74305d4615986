package slngclient

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestHandshakeMessage(t *testing.T) {
	t.Parallel()
	const key, pkey = "sk_live_SENTINEL/+=", "pk_SENTINEL_provider"
	long := strings.Repeat("ü", 300)
	for _, tc := range []struct {
		name string
		body string
		cut  bool
		want string
	}{
		{"plain text", "BYOK is only supported for external STT/TTS routes\n", false, "BYOK is only supported for external STT/TTS routes"},
		{"FastAPI detail", `{"detail":"BYOK is only supported for external STT/TTS routes"}`, false, "BYOK is only supported for external STT/TTS routes"},
		{"error object", `{"error":{"code":"x","message":"model not found"}}`, false, "model not found"},
		{"JSON without a known field stays text", `{"status":400}`, false, `{"status":400}`},
		{"whitespace collapsed, controls dropped", "bad\r\n\t  request\x00\x1b[31m red\u200b", false, "bad request[31m red"},
		{"invalid UTF-8 dropped", "caf\xc3 \xff ok", false, "caf ok"},
		{"key redacted", "invalid key " + key + " for route", false, "invalid key REDACTED for route"},
		{"query-escaped key redacted", "GET /v1?token=" + url.QueryEscape(key) + " refused", false, "GET /v1?token=REDACTED refused"},
		{"provider key redacted", `{"detail":"provider key ` + pkey + ` rejected"}`, false, "provider key REDACTED rejected"},
		{"JSON-escaped key redacted", `{"detail":"key \u0073k_live_SENTINEL\/+= rejected"}`, false, "key REDACTED rejected"},
		{"a key cut at the end of the body", "echo: " + key[:9], true, "echo:"},
		{"bounded on a rune boundary", long, false, strings.Repeat("ü", 128)},
		{"empty", "", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := handshakeMessage([]byte(tc.body), tc.cut, []string{key, "", pkey})
			if got != tc.want {
				t.Errorf("handshakeMessage(%q) = %q, want %q", tc.body, got, tc.want)
			}
			if len(got) > maxHandshakeMessage || !utf8.ValidString(got) || strings.Contains(got, "SENTINEL") {
				t.Errorf("handshakeMessage(%q) = %q: over the bound, invalid or leaking", tc.body, got)
			}
		})
	}
}
