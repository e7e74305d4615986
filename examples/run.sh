#!/usr/bin/env bash
# Runs the client examples against the real gateway in dev mode, each built
# the way a caller builds: Go as its own module that depends on the API module
# (gen/) alone; Python from the wheels installed into a fresh venv; Java
# compiled against the jars. The wheels and jars are what `make clients`
# (clients/build.sh) puts in $CLIENTS_OUT. Python and Java use Debian's gRPC
# packages (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-./bin}
CLIENTS_OUT=${CLIENTS_OUT:-dist/clients}
VERSION=${CLIENTS_VERSION:?set CLIENTS_VERSION to the version of the packages in $CLIENTS_OUT}
work=$(mktemp -d)
me=examples
. scripts/gateway.sh
trap cleanup_gateway EXIT

# Build everything before the gateway starts, so that its timeouts never race
# a compiler.
(
	cd examples/go
	if go list -m all | grep -q '^github.com/speech-gateway/speech-gateway '; then
		echo "examples: the Go example must depend on the API module only, not on the server" >&2
		exit 1
	fi
	go vet ./...
	go build -o "$work/go-example" .
)

# Python: a venv that sees Debian's grpcio and protobuf (no index here), and
# our two wheels installed into it by pip, with no index either.
/usr/bin/python3 -m venv --system-site-packages "$work/venv"
"$work/venv/bin/pip" install --quiet --no-index --no-cache-dir \
	"$CLIENTS_OUT/speech_gateway_api-$VERSION-py3-none-any.whl" \
	"$CLIENTS_OUT/speech_gateway_googleapis_rpc-$VERSION-py3-none-any.whl"

# Java: Debian's grpc-java 1.41 and its dependencies, plus our jars.
J=/usr/share/java
cp="$CLIENTS_OUT/speech-gateway-api-$VERSION.jar:$CLIENTS_OUT/speech-gateway-googleapis-rpc-$VERSION.jar"
for jar in grpc-api grpc-core grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub grpc-context protobuf guava \
	perfmark-api gson error_prone_annotations netty-buffer netty-codec netty-codec-http \
	netty-codec-http2 netty-common netty-handler netty-resolver netty-transport netty-transport-native-unix-common; do
	cp="$cp:$J/$jar.jar"
done
mkdir -p "$work/classes"
javac -nowarn -d "$work/classes" -cp "$cp:$J/junit-platform-console-standalone.jar" examples/java/ExampleTest.java

start_gateway --dev --listen 127.0.0.1:0 --admin-listen ''
echo "examples: gateway on $addr"

"$work/go-example" --addr "$addr"

# Run from $work, so that nothing in the checkout can shadow the installed
# packages, and check that the stubs are the installed ones.
py_example=$PWD/examples/python/example.py
(
	cd "$work"
	where=$(venv/bin/python -c 'import slng.speech.v1.tts_pb2 as m, google.rpc.status_pb2 as s; print(m.__file__, s.__file__)')
	for f in $where; do
		if [[ $f != "$work/venv/"* ]]; then
			echo "examples: $f is not from the installed wheels" >&2
			exit 1
		fi
	done
	venv/bin/python "$py_example" "$addr"
)

SPEECH_GATEWAY_ADDR="$addr" java -jar "$J/junit-platform-console-standalone.jar" --disable-banner \
	--details=summary --fail-if-no-tests --class-path "$work/classes:$cp" --select-class ExampleTest

stop_gateway
echo "examples: ok"
