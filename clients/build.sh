#!/usr/bin/env bash
# Builds the speech-gateway API as packages for Python and Java callers, with
# no package index: everything comes from proto/, the vendored googleapis
# protos in clients/third_party, and Debian's protoc, gRPC plugins, Python
# build tools and Java jars (.ci/run installs them).
#
#   clients/build.sh OUT VERSION
#
# writes into OUT:
#   speech_gateway_api-VERSION-py3-none-any.whl       slng.speech.v1 (messages, stubs, .pyi)
#   speech_gateway_googleapis_rpc-VERSION-py3-none-any.whl   google.rpc status and error details
#   speech-gateway-api-VERSION.jar                    ai.slng.speech.v1 (classes and .proto)
#   speech-gateway-googleapis-rpc-VERSION.jar         com.google.rpc status and error details
#
# The googleapis packages are for machines without PyPI or Maven Central;
# with them, callers use googleapis-common-protos (Python) and
# proto-google-common-protos (Java) instead. Debian's proto-google-common-protos
# 1.16 predates ErrorInfo. docs/clients.md shows how a caller depends on each.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -ne 2 ]]; then
	echo "usage: $0 OUT VERSION" >&2
	exit 2
fi
out=$1
version=$2
BIN=${BIN:-./bin}
# buf runs protoc_builtin plugins with the protoc first on PATH: Debian's 3.21,
# whose Python and Java code suits Debian's protobuf runtimes.
export PATH="/usr/bin:$PATH"
googleapis=clients/third_party/googleapis
rpc_protos=(google/rpc/status.proto google/rpc/error_details.proto)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
rm -f "$out"/speech_gateway_*.whl "$out"/speech-gateway-*.jar

# wheel DIR: builds the Python project staged in DIR into $work/whl.
wheel() {
	echo "$version" >"$1/VERSION"
	cp LICENSE "$1/"
	(cd "$1" && /usr/bin/python3 -m build --no-isolation --wheel --outdir "$work/whl" . >"$work/build.log" 2>&1) || {
		cat "$work/build.log" >&2
		exit 1
	}
}

# Python: the API, typed (.pyi and py.typed), and google.rpc.
mkdir -p "$work/py-api" "$work/py-rpc"
cp clients/python/api/pyproject.toml "$work/py-api/"
"$BIN/buf" generate --template buf.gen.python.yaml -o "$work/py-api"
touch "$work/py-api/slng/speech/v1/py.typed"
wheel "$work/py-api"
cp clients/python/googleapis-rpc/pyproject.toml "$work/py-rpc/"
protoc -I "$googleapis" --python_out="$work/py-rpc" --pyi_out="$work/py-rpc" "${rpc_protos[@]}"
touch "$work/py-rpc/google/rpc/py.typed"
wheel "$work/py-rpc"
cp "$work"/whl/*.whl "$out/"

# Java: compiled for Java 8, as Debian's protobuf-java and grpc-java are;
# the jars hold the .proto sources too, as Google's proto jars do.
J=/usr/share/java
cp=
for jar in protobuf grpc-api grpc-stub grpc-protobuf guava geronimo-annotation-1.3-spec; do
	cp="$cp:$J/$jar.jar"
done
# jar_of NAME SRC PROTO_ROOT PROTO...: compiles the .java files under SRC and
# packs them with the protos into $out/NAME-$version.jar.
jar_of() {
	local name=$1 src=$2 root=$3
	shift 3
	mkdir -p "$work/classes-$name"
	javac --release 8 -Xlint:-options -nowarn -encoding UTF-8 -d "$work/classes-$name" -cp "${cp#:}" \
		$(find "$src" -name '*.java')
	mkdir -p "$work/classes-$name/META-INF"
	cp LICENSE "$work/classes-$name/META-INF/LICENSE"
	for p in "$@"; do
		mkdir -p "$work/classes-$name/$(dirname "$p")"
		cp "$root/$p" "$work/classes-$name/$p"
	done
	printf 'Implementation-Title: %s\nImplementation-Version: %s\n' "$name" "$version" >"$work/manifest-$name"
	jar --create --file "$out/$name-$version.jar" --manifest "$work/manifest-$name" -C "$work/classes-$name" .
}
mkdir -p "$work/java-rpc" "$work/java-api"
protoc -I "$googleapis" --java_out="$work/java-rpc" "${rpc_protos[@]}"
jar_of speech-gateway-googleapis-rpc "$work/java-rpc" "$googleapis" "${rpc_protos[@]}"
"$BIN/buf" generate --template buf.gen.java.yaml -o "$work/java-api"
jar_of speech-gateway-api "$work/java-api" proto $(cd proto && find slng -name '*.proto' | sort)

ls -l "$out"
