package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// relay serves the gateway's gRPC API by copying frames to and from SLNG.
type relay struct {
	speechv1.UnimplementedTextToSpeechServiceServer
	speechv1.UnimplementedSpeechToTextServiceServer
	base                      string      // SLNG's base URL
	header                    http.Header // the key, on every upgrade
	ttsModel, voice, sttModel string
}

// control is the JSON frames the relay acts on; it ignores the rest.
type control struct {
	Type       string  `json:"type"`
	SessionID  string  `json:"session_id"`
	Transcript string  `json:"transcript"`
	Confidence float32 `json:"confidence"`
	Language   string  `json:"language"`
	Code       string  `json:"code"`
	Message    string  `json:"message"`
}

var (
	msgFlush    = []byte(`{"type":"flush"}`)
	msgClose    = []byte(`{"type":"close"}`)
	msgFinalize = []byte(`{"type":"finalize"}`)
)

// upstream is one SLNG session on its socket.
type upstream struct {
	ws  *websocket.Conn
	buf bytes.Buffer // the last frame read, reused for the next
	id  string       // SLNG's session id, from ready
}

// dial opens a session on SLNG's bridge route for kind ("tts" or "stt"),
// sends init and waits for ready. The caller closes the socket; cancelling
// ctx closes it too, which is how a blocked read or write ends.
func (r *relay) dial(ctx context.Context, kind, model string, init any) (*upstream, func() bool, error) {
	ws, _, err := websocket.Dial(ctx, r.base+"/v1/bridges/unmute/"+kind+"/"+model, &websocket.DialOptions{
		HTTPHeader:      r.header,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, nil, status.Error(codes.Unavailable, err.Error())
	}
	ws.SetReadLimit(1 << 20)
	stop := context.AfterFunc(ctx, func() { _ = ws.CloseNow() })
	u := &upstream{ws: ws}
	b, err := json.Marshal(init)
	if err == nil {
		err = ws.Write(ctx, websocket.MessageText, b)
	}
	for err == nil {
		var typ websocket.MessageType
		if typ, err = u.read(); err != nil || typ != websocket.MessageText {
			continue
		}
		var c control
		if err = json.Unmarshal(u.buf.Bytes(), &c); err != nil {
			break
		}
		if c.Type == "error" {
			err = fmt.Errorf("%s: %s", c.Code, c.Message)
		}
		if c.Type == "ready" {
			u.id = c.SessionID
			return u, stop, nil
		}
	}
	stop()
	_ = ws.CloseNow()
	return nil, nil, status.Error(codes.Unavailable, err.Error())
}

// read reads the next frame into u.buf. It passes no context: a
// cancellable one costs coder/websocket a context.AfterFunc per frame, and
// the socket is closed instead to end a blocked read.
func (u *upstream) read() (websocket.MessageType, error) {
	typ, rd, err := u.ws.Reader(context.Background())
	if err != nil {
		return 0, err
	}
	u.buf.Reset()
	_, err = u.buf.ReadFrom(rd)
	return typ, err
}

// close ends the session as SLNG's clients do: a close message, then the
// WebSocket close handshake.
func (u *upstream) close() {
	_ = u.ws.Write(context.Background(), websocket.MessageText, msgClose)
	_ = u.ws.Close(websocket.StatusNormalClosure, "")
}

// ended is the gRPC status for a socket that ended with err: nil when SLNG
// closed it normally (or err is nil).
func ended(err error) error {
	if err == nil || websocket.CloseStatus(err) == websocket.StatusNormalClosure {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}
