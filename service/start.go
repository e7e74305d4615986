package service

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/slngclient"
)

// streamStart is what a stream has once it is let in: its logger, its
// ErrorInfo metadata so far, its caller's account and own SLNG key, and the
// gateway slot it holds.
type streamStart struct {
	log       *zap.Logger
	meta      streamMeta
	usage     *callerUsage
	callerKey string
	slot      func()
}

// release gives back the slot and, if the handler ends without metering
// the stream (a panic), the caller's place under its quotas.
func (st *streamStart) release() {
	st.slot()
	st.usage.end(st.log, "", 0, 0, errHandlerAborted) // only the first end counts
}

// startStream lets a stream in, in this order, before its config: its
// caller under the access policy and the caller's quotas (so that a caller
// at its quota never holds a gateway slot), then a slot under MaxStreams,
// then the caller's own SLNG key if it sent one. When a stream is refused,
// the error is the status it ends with, already logged and counted.
func (s *Server) startStream(ctx context.Context, service, rpc string) (*streamStart, error) {
	id, log := s.streamLogger(ctx, service, rpc)
	usage, log := s.callerUsage(ctx, log, rpc)
	meta := streamMeta{sessionID: id, caller: usage.caller, region: s.cfg.Region}
	refuse := func(err error) (*streamStart, error) {
		usage.end(log, "", 0, 0, err)
		return nil, s.finish(ctx, rpc, err, meta, log)
	}
	if s.drainCtx.Err() != nil {
		return refuse(errDraining)
	}
	if err := usage.admit(ctx, s); err != nil {
		return refuse(err)
	}
	slot, err := s.admit(rpc)
	if err != nil {
		return refuse(err)
	}
	key, err := s.callerKey(ctx)
	if err != nil {
		slot()
		return refuse(err)
	}
	return &streamStart{log: log, meta: meta, usage: usage, callerKey: key, slot: slot}, nil
}

func durationOrNil(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(d)
}

// warningOf turns a non-fatal upstream error into a Warning, bounding the
// message so that an upstream cannot stuff the caller's stream.
func warningOf(ue *slngclient.UpstreamError) *speechv1.Warning {
	if ue == nil {
		return &speechv1.Warning{Code: "unknown"}
	}
	return &speechv1.Warning{Code: truncate(ue.Code, 64), Message: truncate(ue.Message, 256)}
}

// maxReconnects bounds reconnects that bring no progress: a session that
// fails again at once will not be saved by another.
const maxReconnects = 3

// reconnectReason names why a session was replaced, for the caller.
func reconnectReason(cause error) string {
	if cause == nil {
		return "rollover"
	}
	switch {
	case errors.Is(cause, errTurnTimeout):
		return "turn_timeout"
	case errors.Is(cause, errClearUnanswered):
		return "clear_unanswered"
	case errors.Is(cause, errFinalizeUnanswered):
		return "finalize_unanswered"
	}
	var held *slngclient.HeldBackError
	if errors.As(cause, &held) {
		return "caller_behind"
	}
	if ue, ok := slngclient.AsUpstreamError(cause); ok {
		switch {
		case ue.Code != "":
			return ue.Code
		case ue.Kind == slngclient.KindClose && ue.CloseCode == 1000:
			return "closed"
		case ue.Reaped():
			return "reaped"
		}
	}
	return "connection_lost"
}
