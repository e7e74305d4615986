#!/usr/bin/env bash
# Tags a release of the Go API module, gen/, at HEAD:
#
#   clients/go/tag.sh X.Y.Z     (make tag-api CLIENTS_VERSION=X.Y.Z)
#
# A module in a subdirectory takes tags prefixed with its directory, so
# the tag is gen/vX.Y.Z, and callers `go get
# github.com/speech-gateway/speech-gateway/gen@vX.Y.Z`. The commit tagged
# must be clean and require that very version in go.mod and
# examples/go/go.mod (the replace directives keep builds here on ./gen),
# so that whoever depends on the server module, or copies the example, gets
# a version that resolves. The binaries' version (git describe) considers
# only vX.Y.Z tags, never these. The tag is created, not pushed.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ $# -ne 1 || ! $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
	echo "usage: $0 X.Y.Z" >&2
	exit 2
fi
tag=gen/v$1
module=github.com/speech-gateway/speech-gateway/gen
if [[ -n $(git status --porcelain) ]]; then
	echo "tag-api: the working tree has changes: commit them first" >&2
	exit 1
fi
for f in go.mod examples/go/go.mod; do
	if ! grep -qE "^[[:space:]]*(require[[:space:]]+)?$module v$1$" "$f"; then
		echo "tag-api: $f must require $module v$1 (it says: $(grep "$module " "$f" | head -1 | xargs))" >&2
		exit 1
	fi
done
if git rev-parse -q --verify "refs/tags/$tag" >/dev/null; then
	echo "tag-api: $tag exists already" >&2
	exit 1
fi
git tag -a "$tag" -m "speech-gateway API v$1"
echo "tagged $tag at $(git rev-parse --short HEAD); push it with: git push origin $tag"
