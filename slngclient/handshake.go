package slngclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	// maxHandshakeBody is how much of a refused handshake's body is read:
	// what coder/websocket keeps of it.
	maxHandshakeBody = 1024
	// maxHandshakeMessage bounds the part of it that reaches Message.
	maxHandshakeMessage = 256
)

// handshakeError classifies a failed dial. A refused handshake's body says
// why (e.g. "BYOK is only supported for external STT/TTS routes"), so a
// sanitized start of it becomes the error's Message; secrets are redacted
// from it.
func handshakeError(ctx context.Context, resp *http.Response, err error, secrets []string) error {
	if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		ue := &UpstreamError{Kind: KindHandshake, HTTPStatus: resp.StatusCode}
		if resp.Body != nil {
			// coder/websocket has already read the first 1 KiB of the body
			// into memory and closed the connection; the limit is ours too,
			// in case that changes.
			b, _ := io.ReadAll(io.LimitReader(resp.Body, maxHandshakeBody))
			ue.Message = handshakeMessage(b, len(b) == maxHandshakeBody, secrets)
		}
		if s := resp.Header.Get("Retry-After"); s != "" {
			if n, perr := strconv.Atoi(s); perr == nil && n >= 0 {
				ue.RetryAfter = time.Duration(n) * time.Second
			}
		}
		return ue.classified()
	}
	if ctx.Err() != nil {
		// The caller's own deadline or cancellation, not SLNG's failure.
		return fmt.Errorf("slng dial: %w", ctx.Err())
	}
	return (&UpstreamError{Kind: KindTransport, Message: "dial failed", Err: opaque(err)}).classified()
}

// handshakeMessage turns the start of a refused handshake's body into an
// error message: the message field of a JSON body (detail, message, error
// or description), or the text itself; without the secrets, control
// characters or invalid UTF-8; whitespace collapsed; at most
// maxHandshakeMessage bytes. cut says that body is only the start of a
// longer one, which may end in the first bytes of a secret.
func handshakeMessage(body []byte, cut bool, keys []string) string {
	// Each secret as is and as it appears in a query string (?token=).
	var secrets []string
	for _, k := range keys {
		if k != "" {
			secrets = append(secrets, k)
			if q := url.QueryEscape(k); q != k {
				secrets = append(secrets, q)
			}
		}
	}
	s := string(body)
	if cut {
		s = trimSecretPrefix(s, secrets)
	}
	s = redactText(s, secrets)
	if m := jsonBodyMessage(s); m != "" {
		s = redactText(m, secrets) // JSON escapes could have hidden one
	}
	s = strings.ToValidUTF8(s, "")
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			space = b.Len() > 0
			continue
		case unicode.IsControl(r) || r == utf8.RuneError || unicode.Is(unicode.Cf, r):
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
		if b.Len() > maxHandshakeMessage {
			break
		}
	}
	return truncate(b.String(), maxHandshakeMessage)
}

// jsonBodyMessage is the message of a JSON error body such as
// {"detail": "..."} or {"error": {"message": "..."}}, or "".
func jsonBodyMessage(s string) string {
	var body errorFields
	if !strings.HasPrefix(strings.TrimSpace(s), "{") || json.Unmarshal([]byte(s), &body) != nil {
		return ""
	}
	if d := rawString(body.Detail); d != "" {
		return d
	}
	_, m := body.codeMessage()
	return m
}

// redactText replaces every secret in s.
func redactText(s string, secrets []string) string {
	for _, sec := range secrets {
		s = strings.ReplaceAll(s, sec, "REDACTED")
	}
	return s
}

// trimSecretPrefix cuts a tail of s that is the start of a secret: a
// secret the cut at the end of s split in two.
func trimSecretPrefix(s string, secrets []string) string {
	for _, sec := range secrets {
		for n := min(len(sec)-1, len(s)); n > 0; n-- {
			if strings.HasSuffix(s, sec[:n]) {
				s = s[:len(s)-n]
				break
			}
		}
	}
	return s
}
