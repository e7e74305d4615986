#!/usr/bin/env bash
# Builds the production image and the simulator's image as `make image` and
# `make image-slngsim` do (scripts/image.sh), with buildah (no Docker engine
# needed), and checks them: the production image holds speech-gateway and
# nothing of the simulator, both carry their OCI labels and SBOMs, the
# gateway's --dev says the simulator is not built in, and the gateway image,
# run with chroot isolation against the simulator image, serves gRPC health,
# /readyz and a synthesis. Needs buildah (Debian) and the binaries of
# `make build` (speechctl). VERSION, REVISION and IMAGE_SOURCE come from make.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-./bin}
: "${VERSION:?set VERSION}" "${REVISION:?set REVISION}" "${IMAGE_SOURCE:?set IMAGE_SOURCE}"
export CONTAINER_TOOL=buildah BUILDAH_ISOLATION=chroot STORAGE_DRIVER=vfs
work=$(mktemp -d)
ctrs=()
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
	for ctr in "${ctrs[@]}"; do buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true; done
	rm -rf "$work"
}
trap cleanup EXIT
fail() {
	echo "image-check: $*" >&2
	exit 1
}
# container IMAGE: a new working container of IMAGE, in $ctr.
container() {
	ctr=$(buildah from -q "$1")
	ctrs+=("$ctr")
}

./scripts/image.sh speech-gateway speech-gateway:check
./scripts/image.sh slngsim slngsim:check

# Files: the production image has the gateway, CA certificates and the SBOM;
# the simulator is neither a file nor linked into the gateway (whose
# function names stay in the stripped binary's pclntab).
for name in speech-gateway slngsim; do
	container "$name:check"
	files=$(cd "$(buildah mount "$ctr")" && find . -type f | sort | tr '\n' ' ')
	case $name in
	speech-gateway) want="./etc/ssl/certs/ca-certificates.crt ./sbom/speech-gateway.cdx.json ./speech-gateway " ;;
	slngsim) want="./sbom/slngsim.cdx.json ./slngsim " ;;
	esac
	[[ $files == "$want" ]] || fail "$name:check holds $files, want $want"
	echo "image: $name:check holds $files"
done
if grep -q 'speech-gateway/slngsim\.' dist/image/speech-gateway/speech-gateway; then
	fail "the production speech-gateway binary links the simulator"
fi
grep -q 'speech-gateway/slngsim\.' dist/image/slngsim/slngsim || fail "the check for simulator code finds none in slngsim itself"

# Labels and SBOMs.
for name in speech-gateway slngsim; do
	buildah inspect --type image "$name:check" >"$work/inspect.json"
	/usr/bin/python3 - "$name" "$work/inspect.json" "dist/image/$name/$name.cdx.json" <<-'PY'
		import json, os, sys
		name, sbom = sys.argv[1], json.load(open(sys.argv[3]))
		labels = json.load(open(sys.argv[2]))["OCIv1"]["config"].get("Labels") or {}
		p = "org.opencontainers.image."
		want = {p + "title": name, p + "version": os.environ["VERSION"], p + "revision": os.environ["REVISION"],
		        p + "source": os.environ["IMAGE_SOURCE"], p + "licenses": "Apache-2.0"}
		bad = {k: labels.get(k) for k, v in want.items() if labels.get(k) != v}
		if bad:
		    sys.exit(f"image-check: {name}:check labels {bad}, want {want}")
		main = sbom["metadata"]["component"]
		deps = {c["name"]: c["version"] for c in sbom["components"]}
		if sbom["bomFormat"] != "CycloneDX" or main["version"] != os.environ["VERSION"] or "std" not in deps:
		    sys.exit(f"image-check: {name} SBOM: {sbom['bomFormat']} of {main}, std {deps.get('std')}")
		print(f"image: {name}:check labels {sorted(k[len(p):] for k in want)}; SBOM {main['name']} {main['version']}, "
		      f"{len(deps)} components, Go {deps['std']}, grpc {deps.get('google.golang.org/grpc')}")
	PY
done

# Running: the simulator from its image, the gateway from its own against
# it (chroot isolation shares the host's network), probed from outside.
key=sk_image_check
container slngsim:check
buildah run "$ctr" -- /slngsim --listen 127.0.0.1:8797 --api-key "$key" >"$work/sim.log" 2>&1 &
pids+=($!)
container speech-gateway:check
if buildah run "$ctr" -- /speech-gateway --dev --listen 127.0.0.1:0 --admin-listen '' >"$work/dev.log" 2>&1; then
	fail "speech-gateway --dev started in the production image"
fi
grep -q 'simulator is not built into this binary' "$work/dev.log" || fail "--dev in the production image: $(cat "$work/dev.log")"
echo "image: --dev in the production image: $(grep -o 'the embedded SLNG simulator is not built into this binary' "$work/dev.log")"
buildah config --env SPEECH_GATEWAY_SLNG_API_KEY="$key" "$ctr"
buildah run "$ctr" -- /speech-gateway --slng-base-url ws://127.0.0.1:8797 \
	--listen 127.0.0.1:50097 --admin-listen 127.0.0.1:9197 --log-format json 2>"$work/run.log" &
pids+=($!)
for _ in $(seq 1 100); do
	if "$BIN/speechctl" health --addr 127.0.0.1:50097 >/dev/null 2>&1; then break; fi
	sleep 0.2
done
"$BIN/speechctl" health --addr 127.0.0.1:50097 || { cat "$work/run.log" "$work/sim.log" >&2; exit 1; }
"$BIN/speechctl" health --addr 127.0.0.1:50097 --service slng.speech.v1.TextToSpeechService
curl -fsS http://127.0.0.1:9197/readyz
"$BIN/speechctl" synthesize --addr 127.0.0.1:50097 --text "From inside the image." --out "$work/x.wav" 2>/dev/null
[[ -s "$work/x.wav" ]] || fail "no audio from the image"
echo "image: the gateway image serves gRPC health, /readyz and a synthesis through the simulator image"
