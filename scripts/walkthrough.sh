#!/usr/bin/env bash
# Runs the README's "Try it with grpcurl" and "Try it with speechctl"
# commands, exactly as written, against the real binary in dev mode on
# localhost:50051 (what `make run` starts), in a scratch directory with
# REPO set to the checkout, as the README has its reader do; then checks
# what they produced, and that the checkout holds nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
BIN=./bin
me=walkthrough
. scripts/gateway.sh
trap cleanup_gateway EXIT

# What the checkout holds before: the walkthrough must add nothing to it.
before=$(git status --porcelain --untracked-files=all)

# --listen is the default, :50051, which the README uses.
start_gateway --dev --admin-listen 127.0.0.1:0

# The README's sh blocks of those sections, one file each, in order.
python3 - "$root/README.md" "$work" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
n = 0
for title in ("## Try it with grpcurl", "## Try it with speechctl"):
    section = text.split(title + "\n", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        open("%s/block%02d.sh" % (sys.argv[2], n), "w").write(block)
        n += 1
PY
cd "$work"
# The reader's scratch directory is made by mktemp: here, inside $work.
export REPO=$root TMPDIR=$work
for f in block*.sh; do
	echo "walkthrough: running $(head -c 60 "$f" | head -1)..."
	if grep -q '"text": ""\|aura-2-thalai-en' "$f"; then
		# The bad-input examples (an empty text, a voice the catalogued
		# model lacks): each must fail with INVALID_ARGUMENT.
		if bash -e "$f" >out.txt 2>&1; then echo "walkthrough: the bad request succeeded" >&2; exit 1; fi
		grep -q 'InvalidArgument' out.txt && grep -q 'BadRequest' out.txt
	else
		bash -e "$f" | tee -a all.txt >/dev/null
	fi
done
got=$(python3 "$root/scripts/grpcurl_audio.py" finals stt.json)
[[ "$got" == "Hello from the gateway." ]] || { echo "walkthrough: transcribed \"$got\"" >&2; exit 1; }
file hello.wav 2>/dev/null | grep -q 'WAVE audio' || python3 -c "import wave; wave.open('hello.wav').getnframes()"
grep -qx 'Hello from speechctl.' all.txt || { echo "walkthrough: speechctl did not transcribe its own audio back" >&2; exit 1; }
# ListModels listed the dev models (SLNG's, as the simulator plays them),
# the defaults among them; speechctl listed them too, and Aura's Spanish
# voices.
for m in deepgram/aura:2 deepgram/nova:3 elevenlabs/eleven-flash:2.5; do
	grep -q "^$m MODEL_KIND_" all.txt || { echo "walkthrough: ListModels did not list $m" >&2; exit 1; }
done
grep -q '"source": "slngsim' models.json || { echo "walkthrough: ListModels did not list the dev catalog" >&2; exit 1; }
grep -q '"voiceId": "aura-2-celeste-es"' all.txt || { echo "walkthrough: ListVoices did not list Aura's Spanish voices" >&2; exit 1; }
grep -q '^deepgram/aura:2 (default) ' all.txt || { echo "walkthrough: speechctl models did not list the default model" >&2; exit 1; }
grep -q '^aura-2-celeste-es ' all.txt || { echo "walkthrough: speechctl voices did not list Aura's Spanish voices" >&2; exit 1; }
cd "$root"
after=$(git status --porcelain --untracked-files=all)
if [[ "$before" != "$after" ]]; then
	echo "walkthrough: the commands wrote into the checkout:" >&2
	diff <(echo "$before") <(echo "$after") >&2 || true
	exit 1
fi
stop_gateway
echo "walkthrough: ok"
