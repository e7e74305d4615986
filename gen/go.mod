// The generated API, a module of its own so that callers get the stubs
// without the server (docs/clients.md). The requirements are floors, kept
// as old as the generated code allows, so that a caller's go line and
// versions stay theirs; the server selects newer ones in its own go.mod.
// grpc v1.64.0 is what protoc-gen-go-grpc's code requires (v1.64.1 fixes a
// token leak in its logs); v1.36.0 is the first protobuf runtime of the
// protoc-gen-go 1.36 generation; the go line is protobuf v1.36.0's.
// examples/go builds and runs on exactly these versions.
module github.com/speech-gateway/speech-gateway/gen

go 1.21

require (
	google.golang.org/grpc v1.64.1
	google.golang.org/protobuf v1.36.0
)

require (
	golang.org/x/net v0.26.0 // indirect
	golang.org/x/sys v0.21.0 // indirect
	golang.org/x/text v0.16.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20240318140521-94a12d6c2237 // indirect
)
