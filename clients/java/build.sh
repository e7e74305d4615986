#!/usr/bin/env bash
# Builds the speech-gateway API for Java callers as jars with their POMs,
# with no package index: from proto/ and the vendored googleapis protos
# (clients/third_party/googleapis), with Debian's protoc, grpc-java plugin
# and jars, and installs them into a Maven repository.
#
#   clients/java/build.sh OUT VERSION MAVEN_REPO
#
# writes into OUT:
#   speech-gateway-api-VERSION.jar, .pom              ai.slng.speech.v1 (classes and .proto)
#   speech-gateway-googleapis-rpc-VERSION.jar, .pom   com.google.rpc status and error details
# and installs both, as io.github.speech-gateway:ARTIFACT:VERSION, into
# MAVEN_REPO in the layout of a Maven repository (the local one,
# ~/.m2/repository, or a directory to upload to your own).
#
# Each jar carries its POM (META-INF/maven/...), which names its
# dependencies: grpc-java and protobuf-java. The googleapis jar is for
# machines without Maven Central; with it, callers use
# proto-google-common-protos instead. docs/clients.md shows how a caller
# depends on each.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ $# -ne 3 ]]; then
	echo "usage: $0 OUT VERSION MAVEN_REPO" >&2
	exit 2
fi
out=$1
version=$2
repo=$3
BIN=${BIN:-./bin}
group=io.github.speech-gateway
# buf runs protoc_builtin plugins with the protoc first on PATH: Debian's
# 3.21, whose Java code suits Debian's protobuf-java 3.21.
export PATH="/usr/bin:$PATH"

J=/usr/share/java
missing=()
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v grpc_java_plugin >/dev/null || missing+=(protobuf-compiler-grpc-java-plugin)
[[ -e $J/grpc-stub.jar ]] || missing+=(libgrpc-java)
[[ -e $J/protobuf.jar ]] || missing+=(libprotobuf-java)
[[ -e $J/geronimo-annotation-1.3-spec.jar ]] || missing+=(libgeronimo-annotation-1.3-spec-java)
if ((${#missing[@]})); then
	echo "clients-java needs Debian's ${missing[*]} (apt-get install -y ${missing[*]})" >&2
	exit 1
fi

googleapis=clients/third_party/googleapis
rpc_protos=(google/rpc/status.proto google/rpc/error_details.proto)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
rm -f "$out"/speech-gateway-*.jar "$out"/speech-gateway-*.pom

# Compiled for Java 8, as Debian's protobuf-java and grpc-java are; the
# jars hold the .proto sources too, as Google's proto jars do.
cp=
for jar in protobuf grpc-api grpc-stub grpc-protobuf guava geronimo-annotation-1.3-spec; do
	cp="$cp:$J/$jar.jar"
done
# jar_of NAME SRC PROTO_ROOT PROTO...: compiles the .java files under SRC
# and packs them, the protos, the LICENSE (META-INF/LICENSE) and the POM
# clients/java/NAME.pom (with the version filled in) into
# $out/NAME-$version.jar, next to the POM.
jar_of() {
	local name=$1 src=$2 root=$3
	shift 3
	local classes=$work/classes-$name
	mkdir -p "$classes/META-INF/maven/$group/$name"
	javac --release 8 -Xlint:-options -nowarn -encoding UTF-8 -d "$classes" -cp "${cp#:}" \
		$(find "$src" -name '*.java')
	cp LICENSE "$classes/META-INF/LICENSE"
	for p in "$@"; do
		mkdir -p "$classes/$(dirname "$p")"
		cp "$root/$p" "$classes/$p"
	done
	sed "s/@VERSION@/$version/" "clients/java/$name.pom" >"$out/$name-$version.pom"
	cp "$out/$name-$version.pom" "$classes/META-INF/maven/$group/$name/pom.xml"
	printf 'groupId=%s\nartifactId=%s\nversion=%s\n' "$group" "$name" "$version" >"$classes/META-INF/maven/$group/$name/pom.properties"
	printf 'Implementation-Title: %s\nImplementation-Version: %s\nImplementation-Vendor-Id: %s\n' "$name" "$version" "$group" >"$work/manifest-$name"
	jar --create --file "$out/$name-$version.jar" --manifest "$work/manifest-$name" -C "$classes" .
}

# install NAME: puts $out/NAME-$version.{jar,pom} into $repo as Maven's
# install plugin would, so that no Maven (nor its plugins) is needed here.
install() {
	local name=$1
	local dir=$repo/${group//.//}/$name
	mkdir -p "$dir/$version"
	cp "$out/$name-$version.jar" "$out/$name-$version.pom" "$dir/$version/"
	local versions=""
	for v in $(ls "$dir" | grep -v '^maven-metadata' | sort -V); do
		versions="$versions      <version>$v</version>"$'\n'
	done
	cat >"$dir/maven-metadata-local.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<metadata>
  <groupId>$group</groupId>
  <artifactId>$name</artifactId>
  <versioning>
    <release>$version</release>
    <versions>
$versions    </versions>
    <lastUpdated>$(date -u +%Y%m%d%H%M%S)</lastUpdated>
  </versioning>
</metadata>
XML
}

mkdir -p "$work/java-rpc" "$work/java-api"
protoc -I "$googleapis" --java_out="$work/java-rpc" "${rpc_protos[@]}"
jar_of speech-gateway-googleapis-rpc "$work/java-rpc" "$googleapis" "${rpc_protos[@]}"
"$BIN/buf" generate --template buf.gen.java.yaml -o "$work/java-api"
jar_of speech-gateway-api "$work/java-api" proto $(cd proto && find slng -name '*.proto' | sort)
install speech-gateway-googleapis-rpc
install speech-gateway-api
ls -l "$out"/speech-gateway-*
echo "installed $group:speech-gateway-api:$version and $group:speech-gateway-googleapis-rpc:$version into $repo"
