#!/usr/bin/env bash
# Builds the FROM-scratch image of deploy/container with buildah (no Docker
# engine needed), runs it with chroot isolation in dev mode, and probes its
# gRPC health and admin endpoints from outside. Needs buildah (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-./bin}
work=$(mktemp -d)
ctr=
run_pid=
cleanup() {
	if [[ -n "$run_pid" ]]; then kill -TERM "$run_pid" 2>/dev/null || true; wait "$run_pid" 2>/dev/null || true; fi
	if [[ -n "$ctr" ]]; then buildah --storage-driver vfs rm "$ctr" >/dev/null 2>&1 || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$work/speech-gateway" ./cmd/speech-gateway
cp /etc/ssl/certs/ca-certificates.crt "$work/"
cp deploy/container/Containerfile "$work/"
buildah --storage-driver vfs bud --isolation chroot -q -t speech-gateway:check -f "$work/Containerfile" "$work" >/dev/null
echo "image: built speech-gateway:check ($(du -h "$work/speech-gateway" | cut -f1) binary, FROM scratch)"

ctr=$(buildah --storage-driver vfs from -q speech-gateway:check)
buildah --storage-driver vfs run --isolation chroot "$ctr" -- /speech-gateway --dev \
	--listen 127.0.0.1:50097 --admin-listen 127.0.0.1:9197 --log-format json 2>"$work/run.log" &
run_pid=$!
for _ in $(seq 1 100); do
	if "$BIN/speechctl" health --addr 127.0.0.1:50097 >/dev/null 2>&1; then break; fi
	sleep 0.2
done
"$BIN/speechctl" health --addr 127.0.0.1:50097
"$BIN/speechctl" health --addr 127.0.0.1:50097 --service slng.speech.v1.TextToSpeechService
curl -fsS http://127.0.0.1:9197/readyz
"$BIN/speechctl" synthesize --addr 127.0.0.1:50097 --text "From inside the image." --out "$work/x.wav" 2>/dev/null
echo "image: the container serves gRPC health, /readyz and a synthesis"
