#!/usr/bin/env bash
# Builds an image of deploy/container from a binary built here:
#
#   scripts/image.sh speech-gateway|slngsim TAG
#
# It builds cmd/NAME for Linux, static and stripped (speech-gateway with the
# build tag nodev, so that the production image holds no simulator), writes
# its CycloneDX SBOM from the module list the binary carries (go version -m,
# read by cyclonedx-gomod, which the Makefile pins into ./bin), and builds
# TAG from deploy/container/Containerfile(.slngsim) with $CONTAINER_TOOL
# (docker, or buildah), labelled with VERSION, REVISION and IMAGE_SOURCE.
# The build context, with the binary and the SBOM, stays in dist/image/NAME.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -ne 2 ]]; then
	echo "usage: $0 speech-gateway|slngsim TAG" >&2
	exit 2
fi
name=$1
tag=$2
case $name in
speech-gateway) tags=nodev file=deploy/container/Containerfile ;;
slngsim) tags= file=deploy/container/Containerfile.slngsim ;;
*)
	echo "$0: no image for $name" >&2
	exit 2
	;;
esac
BIN=${BIN:-./bin}
CONTAINER_TOOL=${CONTAINER_TOOL:-docker}
: "${VERSION:?set VERSION}" "${REVISION:?set REVISION}" "${IMAGE_SOURCE:?set IMAGE_SOURCE}"
certs=${CA_CERTIFICATES:-/etc/ssl/certs/ca-certificates.crt}

ctx=dist/image/$name
rm -rf "$ctx"
mkdir -p "$ctx"
CGO_ENABLED=0 GOOS=linux go build -trimpath -tags "$tags" \
	-ldflags "-s -w -X main.version=$VERSION -X main.revision=$REVISION" -o "$ctx/$name" "./cmd/$name"
"$BIN/cyclonedx-gomod" bin -json -std -version "$VERSION" -output "$ctx/$name.cdx.json" "$ctx/$name"
if [[ $name == speech-gateway ]]; then
	if [[ ! -f $certs ]]; then
		echo "$0: no CA certificates at $certs: set CA_CERTIFICATES" >&2
		exit 1
	fi
	cp "$certs" "$ctx/ca-certificates.crt"
fi
# Each tool takes its own output to a terminal: keep the image id quiet.
$CONTAINER_TOOL build -q -f "$file" -t "$tag" \
	--build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" --build-arg SOURCE="$IMAGE_SOURCE" \
	"$ctx" >/dev/null
echo "image: $tag from $file, SBOM $ctx/$name.cdx.json"
