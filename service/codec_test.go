package service

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

func audioResponse(n int) *speechv1.SynthesizeResponse {
	return &speechv1.SynthesizeResponse{Response: &speechv1.SynthesizeResponse_Audio{
		Audio: &speechv1.AudioChunk{Data: bytes.Repeat([]byte{7}, n), Sequence: 42, TurnId: 3}}}
}

func TestCodecRoundTrip(t *testing.T) {
	c := Codec()
	if c.Name() != grpcproto.Name {
		t.Fatalf("name %q", c.Name())
	}
	msgs := []proto.Message{
		&speechv1.SynthesizeResponse{},
		audioResponse(0),
		audioResponse(960),  // a 20 ms chunk of 24 kHz LINEAR16, under grpc-go's pooling threshold
		audioResponse(5000), // over it
		&speechv1.SynthesizeRequest{Request: &speechv1.SynthesizeRequest_Text{Text: &speechv1.TextInput{Text: strings.Repeat("word ", 300)}}},
	}
	for _, m := range msgs {
		data, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := data.Materialize(); !bytes.Equal(got, want) {
			t.Fatalf("%T: marshalled %d bytes, want %d", m, len(got), len(want))
		}
		back := m.ProtoReflect().New().Interface()
		if err := c.Unmarshal(data, back); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(m, back, protocmp.Transform()); diff != "" {
			t.Fatalf("round trip changed %T (-want +got):\n%s", m, diff)
		}
		data.Free()
	}
	if _, err := c.Marshal("not a message"); err == nil {
		t.Fatal("marshalled a string")
	}
}

// TestCodecPoolsAudioChunks checks what the codec is for: a 960-byte chunk
// goes into a pooled buffer, where grpc-go's codec (v1.85) allocates one.
func TestCodecPoolsAudioChunks(t *testing.T) {
	m := audioResponse(960)
	data, err := Codec().Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Free()
	if _, plain := data[0].(mem.SliceBuffer); plain {
		t.Fatal("a 960-byte chunk was marshalled into an unpooled buffer")
	}
}

func BenchmarkCodecMarshalChunk(b *testing.B) {
	m := audioResponse(960)
	for _, c := range []encoding.CodecV2{encoding.GetCodecV2(grpcproto.Name), Codec()} {
		name := "grpc"
		if _, ok := c.(pooledCodec); ok {
			name = "pooled"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				data, err := c.Marshal(m)
				if err != nil {
					b.Fatal(err)
				}
				data.Free()
			}
		})
	}
}
