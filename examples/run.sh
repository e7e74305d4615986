#!/usr/bin/env bash
# Runs the client examples against the real gateway in dev mode, each built
# the way a caller builds: Go as its own module that depends on the API module
# (gen/) alone; Python from the wheels installed into a fresh venv with pip
# and no index; Java by a Maven build that names only the API's coordinates
# (examples/java/pom.xml), offline. The wheels are what `make clients-python`
# puts in $CLIENTS_OUT, and the jars with their POMs what `make clients-java`
# installs into $MAVEN_REPO. Python and Java use Debian's gRPC packages, and
# Maven Debian's packaged Maven repository for everything but our jars
# (.ci/run installs them).
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

# Java: Maven compiles the example from a copy (its target/ stays out of the
# checkout), resolving our jars from $MAVEN_REPO and grpc-java, protobuf-java
# and JUnit from Debian's Maven repository in place of Maven Central, offline:
# the dependencies the example gets are the ones the API's POM names.
MAVEN_REPO=${MAVEN_REPO:-$CLIENTS_OUT/maven-repository}
mkdir -p "$work/java"
cp examples/java/pom.xml examples/java/ExampleTest.java "$work/java/"
cat >"$work/maven-settings.xml" <<XML
<settings>
  <localRepository>$work/m2</localRepository>
  <offline>true</offline>
  <mirrors>
    <mirror><id>debian</id><mirrorOf>central</mirrorOf><url>file:///usr/share/maven-repo</url></mirror>
  </mirrors>
  <profiles>
    <profile>
      <id>speech-gateway</id>
      <repositories>
        <repository><id>speech-gateway</id><url>file://$(realpath "$MAVEN_REPO")</url></repository>
      </repositories>
    </profile>
  </profiles>
  <activeProfiles><activeProfile>speech-gateway</activeProfile></activeProfiles>
</settings>
XML
# Offline, Maven still reads file:// repositories when told it may.
(cd "$work/java" && mvn -B -q -Dstyle.color=never -s "$work/maven-settings.xml" -Daether.offline.protocols=file \
	-Dspeech-gateway.version="$VERSION" test-compile)
# It runs with Debian's grpc-java 1.41 and its dependencies, plus our jars.
J=/usr/share/java
cp="$CLIENTS_OUT/speech-gateway-api-$VERSION.jar:$CLIENTS_OUT/speech-gateway-googleapis-rpc-$VERSION.jar"
for jar in grpc-api grpc-core grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub grpc-context protobuf guava \
	perfmark-api gson error_prone_annotations netty-buffer netty-codec netty-codec-http \
	netty-codec-http2 netty-common netty-handler netty-resolver netty-transport netty-transport-native-unix-common; do
	cp="$cp:$J/$jar.jar"
done

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
	--details=summary --fail-if-no-tests --class-path "$work/java/target/test-classes:$cp" --select-class ExampleTest

stop_gateway
echo "examples: ok"
