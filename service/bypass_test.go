package service

import (
	"context"
	"testing"

	"google.golang.org/grpc"
)

// countingStream counts the messages sent through it.
type countingStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent int
}

func (s *countingStream) Context() context.Context { return s.ctx }
func (s *countingStream) SendMsg(any) error        { s.sent++; return nil }

type middleKey struct{}

// TestMessagesBypass: the handler's messages reach the stream
// StreamInterceptor was given without passing the wrapper of an
// interceptor between the two, and the context that interceptor added is
// still the handler's.
func TestMessagesBypass(t *testing.T) {
	outer := &countingStream{ctx: context.Background()}
	var middle *countingStream
	middleware := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		middle = &countingStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), middleKey{}, "kept")}
		return h(srv, middle)
	}
	chain := []grpc.StreamServerInterceptor{StreamInterceptor(nil), middleware, MessagesBypass()}
	var handler grpc.StreamHandler = func(_ any, ss grpc.ServerStream) error {
		if ss.Context().Value(middleKey{}) != "kept" {
			t.Error("the handler lost the context the middle interceptor added")
		}
		if _, ok := ss.Context().Value(sessionIDKey{}).(string); !ok {
			t.Error("the handler has no session id")
		}
		for range 3 {
			if err := ss.SendMsg(nil); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	}
	for i := len(chain) - 1; i >= 0; i-- {
		ic, next := chain[i], handler
		handler = func(srv any, ss grpc.ServerStream) error { return ic(srv, ss, &grpc.StreamServerInfo{}, next) }
	}
	if err := handler(nil, outer); err != nil {
		t.Fatal(err)
	}
	if outer.sent != 3 || middle.sent != 0 {
		t.Fatalf("the outer stream got %d messages and the middle wrapper %d, want 3 and 0", outer.sent, middle.sent)
	}
}
