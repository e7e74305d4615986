#!/usr/bin/env bash
# Runs the README's "Try it with grpcurl" commands, exactly as written,
# against the real binary in dev mode on localhost:50051 (what `make run`
# starts), in a scratch directory; then checks what they produced.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
BIN=./bin
me=walkthrough
. scripts/gateway.sh
trap cleanup_gateway EXIT

# --listen is the default, :50051, which the README uses.
start_gateway --dev --admin-listen 127.0.0.1:0

# The README's sh blocks of that section, one file each.
python3 - "$root/README.md" "$work" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
section = text.split("## Try it with grpcurl", 1)[1].split("\n## ", 1)[0]
for i, block in enumerate(re.findall(r"```sh\n(.*?)```", section, re.S)):
    open("%s/block%d.sh" % (sys.argv[2], i), "w").write(block)
PY
cd "$work"
ln -s "$root/bin" bin
ln -s "$root/scripts" scripts
for f in block*.sh; do
	echo "walkthrough: running $(head -c 60 "$f" | head -1)..."
	if grep -q '"text": ""' "$f"; then
		# The bad-input example: it must fail with INVALID_ARGUMENT.
		if bash -e "$f" >out.txt 2>&1; then echo "walkthrough: the bad request succeeded" >&2; exit 1; fi
		grep -q 'InvalidArgument' out.txt && grep -q 'BadRequest' out.txt
	else
		bash -e "$f" | tee -a all.txt >/dev/null
	fi
done
got=$(python3 scripts/grpcurl_audio.py finals stt.json)
[[ "$got" == "Hello from the gateway." ]] || { echo "walkthrough: transcribed \"$got\"" >&2; exit 1; }
file hello.wav 2>/dev/null | grep -q 'WAVE audio' || python3 -c "import wave; wave.open('hello.wav').getnframes()"
cd "$root"
stop_gateway
echo "walkthrough: ok"
