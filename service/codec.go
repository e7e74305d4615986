package service

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Codec is the gateway's gRPC codec, for grpc.ForceServerCodecV2. It is
// grpc-go's protobuf codec, except that every message is marshalled into a
// pooled buffer. grpc-go pools only messages of 1 KiB or more, and a 20 ms
// chunk of 24 kHz LINEAR16 audio is 960 bytes: without this, every such
// chunk sent would allocate its own buffer for the garbage collector.
func Codec() encoding.CodecV2 {
	return pooledCodec{base: encoding.GetCodecV2(grpcproto.Name)}
}

type pooledCodec struct {
	base encoding.CodecV2 // grpc-go's own, for everything but Marshal
}

func (c pooledCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return c.base.Marshal(v)
	}
	// UseCachedSize is safe only right after Size, on a message nobody
	// changes meanwhile: Send owns it until it returns.
	size := proto.Size(m)
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		pool.Put(buf)
		return nil, err
	}
	if len(out) != size {
		// The cached size was stale, so out may not even be in buf.
		pool.Put(buf)
		return nil, fmt.Errorf("proto: %T changed while it was marshalled", m)
	}
	*buf = out
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func (c pooledCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return c.base.Unmarshal(data, v)
}

func (c pooledCodec) Name() string { return c.base.Name() }
