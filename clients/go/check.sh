#!/usr/bin/env bash
# Shows that the Go API module resolves for a caller by its tag, both ways
# a company's build gets private modules, without touching this checkout or
# the network beyond the Go module proxy:
#
#   clients/go/check.sh VERSION
#
# 1. Straight from git, as GOPRIVATE makes `go get` do: HEAD is tagged
#    gen/vVERSION in a scratch copy of the repository, which git reaches in
#    place of the module's https URL (url.<copy>.insteadOf), and a caller
#    module with the Go example's code runs
#    `go get github.com/speech-gateway/speech-gateway/gen@vVERSION`.
# 2. Through a module proxy, as a company's internal proxy serves it: the
#    module cache that step 1 filled is a GOPROXY directory; a second caller
#    with an empty module cache gets the module from it with GONOSUMDB (the
#    public checksum database knows no private module) and builds.
#
# Only committed files are in HEAD: commit before checking a change.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ $# -ne 1 || ! $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
	echo "usage: $0 X.Y.Z" >&2
	exit 2
fi
version=v$1
module=github.com/speech-gateway/speech-gateway
root=$PWD
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

git init -q --bare "$work/repo.git"
git -C "$work/repo.git" fetch -q --no-tags "$root" HEAD
git -C "$work/repo.git" tag "gen/$version" FETCH_HEAD
printf '[url "file://%s/repo.git"]\n\tinsteadOf = https://%s\n' "$work" "$module" >"$work/gitconfig"

# caller DIR: a module holding the Go example's code and nothing else.
caller() {
	mkdir -p "$1"
	cp examples/go/main.go "$1/"
	printf 'module example.com/caller\n\ngo 1.21\n' >"$1/go.mod"
}
# The public modules come from this machine's module cache when it has
# them, else from its GOPROXY.
public="file://$(go env GOMODCACHE)/cache/download,$(go env GOPROXY)"
export GOWORK=off GOFLAGS=-modcacherw GOTOOLCHAIN=local

echo "clients-go: go get $module/gen@$version from git (GOPRIVATE)"
caller "$work/git"
(
	cd "$work/git"
	export GIT_CONFIG_GLOBAL=$work/gitconfig GOMODCACHE=$work/cache-git GOPROXY=$public GOPRIVATE=$module
	go get "$module/gen@$version"
	go mod tidy
	go build -trimpath -o /dev/null .
	grep -q "^	$module/gen $version$" go.mod
)

echo "clients-go: go get $module/gen@$version through a module proxy (GONOSUMDB)"
caller "$work/proxy"
(
	cd "$work/proxy"
	export GOMODCACHE=$work/cache-proxy GOPROXY="file://$work/cache-git/cache/download,$public" GONOSUMDB=$module
	go get "$module/gen@$version"
	go mod tidy
	go build -trimpath -o /dev/null .
	grep -q "^	$module/gen $version$" go.mod
)
echo "clients-go: ok"
