package slngclient_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// TestReaps: a close with 1001, 1008, 1011 or 1012 and no error frame
// before it is a reap, retryable and not SLNG being unwell, except a 1011
// in the middle of a turn's audio, which is SLNG unwell; one after an
// error frame that blames the request is that error; one after an idle or
// duration error frame is a reap; one before ready is a failure to open.
func TestReaps(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                      string
		s                         script
		kind                      slngclient.ErrorKind
		code                      string
		retryable, reaped, unwell bool
	}{
		{"1008 alone", script{ready: true, code: websocket.StatusPolicyViolation}, slngclient.KindClose, "", true, true, false},
		{"1011 alone", script{ready: true, code: websocket.StatusInternalError}, slngclient.KindClose, "", true, true, false},
		// A provider crashing in the middle of the audio: SLNG unwell.
		{"1011 in the middle of audio", script{ready: true, frames: []frame{{binary: []byte{1}}}, code: websocket.StatusInternalError},
			slngclient.KindClose, "", true, false, true},
		{"1011 in the middle of JSON audio", script{ready: true, frames: []frame{text(`{"type":"audio_chunk","data":"AQI=","sequence":1}`)}, code: websocket.StatusInternalError},
			slngclient.KindClose, "", true, false, true},
		{"1011 after the turn's end", script{ready: true, frames: []frame{{binary: []byte{1}}, text(`{"type":"Audio_End"}`)}, code: websocket.StatusInternalError},
			slngclient.KindClose, "", true, true, false},
		{"1012 alone", script{ready: true, code: websocket.StatusServiceRestart}, slngclient.KindClose, "", true, true, false},
		{"1001 alone", script{ready: true, code: websocket.StatusGoingAway}, slngclient.KindClose, "", true, true, false},
		{"1013 is not a reap", script{ready: true, code: websocket.StatusTryAgainLater}, slngclient.KindClose, "", true, false, true},
		{"1008 after audio", script{ready: true, frames: []frame{{binary: []byte{1}}}, code: websocket.StatusPolicyViolation}, slngclient.KindClose, "", true, true, false},
		{"idle timeout frame then 1008", script{ready: true, frames: []frame{text(`{"type":"error","code":"idle_timeout_exceeded","message":"idle"}`)}, code: websocket.StatusPolicyViolation},
			slngclient.KindErrorFrame, "idle_timeout_exceeded", true, true, false},
		{"duration frame then 1008", script{ready: true, frames: []frame{text(`{"type":"Error","error":{"code":"max_connection_duration_exceeded","message":"30 min"}}`)}, code: websocket.StatusPolicyViolation},
			slngclient.KindErrorFrame, "max_connection_duration_exceeded", true, true, false},
		{"config_error then 1008", script{ready: true, frames: []frame{text(`{"type":"error","code":"config_error","message":"bad voice"}`)}, code: websocket.StatusPolicyViolation},
			slngclient.KindErrorFrame, "config_error", false, false, false},
		{"invalid_request then 1008", script{ready: true, frames: []frame{text(`{"type":"error","data":{"code":"invalid_request","message":"bad"}}`)}, code: websocket.StatusPolicyViolation},
			slngclient.KindErrorFrame, "invalid_request", false, false, false},
		{"auth_error then 1008", script{ready: true, frames: []frame{text(`{"type":"error","code":"auth_error"}`)}, code: websocket.StatusPolicyViolation},
			slngclient.KindErrorFrame, "auth_error", false, false, false},
		{"provider_error then 1011", script{ready: true, frames: []frame{text(`{"type":"error","code":"provider_error","message":"down"}`)}, code: websocket.StatusInternalError},
			slngclient.KindErrorFrame, "provider_error", true, false, true},
		// A frame naming no code explains nothing: the close decides.
		{"code-less frame then 1008", script{ready: true, frames: []frame{text(`{"type":"error","error":{"message":"idle"}}`)}, code: websocket.StatusPolicyViolation},
			slngclient.KindClose, "", true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := scripted(t, tc.s, slngclient.Options{})
			ctx := testCtx(t)
			s, err := c.DialTTS(ctx, aura, slngclient.TTSConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.CloseNow()
			_, err = recvAllTTS(t, ctx, s)
			ue, ok := slngclient.AsUpstreamError(err)
			if !ok || ue.Kind != tc.kind || ue.Code != tc.code || ue.CloseCode != int(tc.s.code) {
				t.Fatalf("Recv() error = %#v, want kind %v code %q close %d", err, tc.kind, tc.code, tc.s.code)
			}
			if ue.Retryable != tc.retryable || ue.Reaped() != tc.reaped || ue.Unwell() != tc.unwell {
				t.Errorf("%v: retryable %v reaped %v unwell %v, want %v %v %v", err, ue.Retryable, ue.Reaped(), ue.Unwell(), tc.retryable, tc.reaped, tc.unwell)
			}
		})
	}
}

// TestCloseBeforeReady: a close while the session is being opened is SLNG
// failing to open it, never a reap; a normal close there is no io.EOF.
func TestCloseBeforeReady(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code   websocket.StatusCode
		unwell bool
	}{
		{websocket.StatusNormalClosure, true},
		{websocket.StatusGoingAway, true},
		{websocket.StatusPolicyViolation, false},
		{websocket.StatusInternalError, true},
		{websocket.StatusServiceRestart, true},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			t.Parallel()
			c := scripted(t, script{code: tc.code}, slngclient.Options{})
			_, err := c.DialSTT(testCtx(t), nova, slngclient.STTConfig{})
			ue, ok := slngclient.AsUpstreamError(err)
			if !ok || ue.Kind != slngclient.KindClose || ue.CloseCode != int(tc.code) || errors.Is(err, io.EOF) {
				t.Fatalf("DialSTT() error = %#v", err)
			}
			if !ue.Retryable || ue.Reaped() || ue.Unwell() != tc.unwell {
				t.Errorf("%v: retryable %v reaped %v unwell %v, want true false %v", err, ue.Retryable, ue.Reaped(), ue.Unwell(), tc.unwell)
			}
		})
	}
}

// TestHandshakeBody: a refused handshake's body reaches the error's
// message, bounded and sanitized, and never with a key.
func TestHandshakeBody(t *testing.T) {
	t.Parallel()
	const providerKey = "pk_provider_SENTINEL_77"
	for _, tc := range []struct {
		name, body, want string
		status           int
	}{
		{"BYOK", "BYOK is only supported for external STT/TTS routes\n", "BYOK is only supported for external STT/TTS routes", 400},
		{"JSON detail echoing the keys", `{"detail":"key ` + key + ` and provider key ` + providerKey + ` refused"}`, "key REDACTED and provider key REDACTED refused", 401},
		{"control characters", "no\x1b[2J\r\nsuch\x00 model", "no[2J such model", 404},
		{"long", strings.Repeat("x", 5000) + key, strings.Repeat("x", 256), 503},
		{"empty", "", "", 429},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			c, err := slngclient.New(slngclient.Options{BaseURL: "ws" + strings.TrimPrefix(srv.URL, "http"), APIKey: key, ProviderKey: providerKey})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.DialTTS(testCtx(t), aura, slngclient.TTSConfig{})
			ue, ok := slngclient.AsUpstreamError(err)
			if !ok || ue.Kind != slngclient.KindHandshake || ue.HTTPStatus != tc.status || ue.Message != tc.want {
				t.Fatalf("DialTTS() error = %#v, want message %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "SENTINEL") {
				t.Fatalf("a key leaked: %v", err)
			}
		})
	}
}

// TestSTTCloseMidTurn: a 1011 while the caller's audio is streaming is
// SLNG failing, not a reap; the same close on a quiet session is a reap.
func TestSTTCloseMidTurn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		audio          bool
		reaped, unwell bool
	}{
		{"streaming", true, false, true},
		{"quiet", false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The script waits for one frame after init: the audio, or
			// the client's own keepalive on the quiet session.
			keepalive := 10 * time.Millisecond
			if tc.audio {
				keepalive = -1 // the audio must be the frame
			}
			c := scripted(t, script{ready: true, awaitFrame: true, code: websocket.StatusInternalError}, slngclient.Options{STTKeepalive: keepalive})
			ctx := testCtx(t)
			s, err := c.DialSTT(ctx, nova, slngclient.STTConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.CloseNow()
			if tc.audio {
				if err := s.SendAudio(ctx, []byte{1, 2}); err != nil {
					t.Fatal(err)
				}
			}
			<-s.Done()
			ue, ok := slngclient.AsUpstreamError(s.Err())
			if !ok || ue.Kind != slngclient.KindClose || ue.CloseCode != 1011 {
				t.Fatalf("Err() = %#v", s.Err())
			}
			if !ue.Retryable || ue.Reaped() != tc.reaped || ue.Unwell() != tc.unwell {
				t.Errorf("retryable %v reaped %v unwell %v, want true %v %v", ue.Retryable, ue.Reaped(), ue.Unwell(), tc.reaped, tc.unwell)
			}
		})
	}
}

// TestBYOKRefused: backend_connection_failed in answer to init, on a
// session that sent a provider key, is the provider refusing that key: the
// caller's fault, neither retryable nor SLNG unwell. Without a provider
// key it is SLNG failing to reach the provider.
func TestBYOKRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		providerKey string
		want        slngclient.Class
	}{
		{"with a provider key", "pk_test", slngclient.Class{Category: slngclient.CategoryProviderKey, Fault: true}},
		{"without", "", slngclient.Class{Category: slngclient.CategoryUnavailable, Retryable: true, Unwell: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := script{frames: []frame{text(`{"type":"error","code":"backend_connection_failed","message":"provider rejected the key"}`)},
				code: websocket.StatusInternalError}
			c := scripted(t, s, slngclient.Options{ProviderKey: tc.providerKey})
			_, err := c.DialTTS(testCtx(t), aura, slngclient.TTSConfig{})
			ue, ok := slngclient.AsUpstreamError(err)
			if !ok || ue.Kind != slngclient.KindErrorFrame || ue.Code != "backend_connection_failed" {
				t.Fatalf("DialTTS() error = %#v", err)
			}
			if got := ue.Class(); got != tc.want || ue.Retryable != tc.want.Retryable || ue.Unwell() != tc.want.Unwell || ue.Reaped() {
				t.Errorf("class %+v retryable %v unwell %v reaped %v, want %+v", got, ue.Retryable, ue.Unwell(), ue.Reaped(), tc.want)
			}
		})
	}
}
