module github.com/speech-gateway/speech-gateway/examples/go

go 1.21

require (
	github.com/speech-gateway/speech-gateway/gen v0.1.0
	google.golang.org/genproto/googleapis/rpc v0.0.0-20240318140521-94a12d6c2237
	google.golang.org/grpc v1.64.1
)

require (
	golang.org/x/net v0.26.0 // indirect
	golang.org/x/sys v0.21.0 // indirect
	golang.org/x/text v0.16.0 // indirect
	google.golang.org/protobuf v1.36.0 // indirect
)

replace github.com/speech-gateway/speech-gateway/gen => ../../gen
