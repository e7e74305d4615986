#!/usr/bin/env bash
# Smoke test of the real binary: start speech-gateway in dev mode (embedded
# SLNG simulator), synthesize a sentence with grpcurl, transcribe exactly that
# audio back with grpcurl, and require the original text. Then SIGTERM must
# stop the gateway cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-./bin}
GRPCURL=${GRPCURL:-$BIN/grpcurl}
TEXT=${TEXT:-"Hello from the speech gateway smoke test. Nothing lost, nothing reordered!"}
work=$(mktemp -d)
me=smoke
. scripts/gateway.sh
trap cleanup_gateway EXIT

start_gateway --dev --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
echo "smoke: gateway on $addr (admin $admin)"

"$GRPCURL" -plaintext "$addr" grpc.health.v1.Health/Check | grep -q SERVING
curl -fsS "http://$admin/readyz" >/dev/null

# 1. SynthesizeText -> raw PCM (and a WAV to listen to).
python3 - "$TEXT" >"$work/tts-request.json" <<'PY'
import json, sys
print(json.dumps({"text": sys.argv[1], "config": {"format": {"encoding": "AUDIO_ENCODING_LINEAR16", "sample_rate_hz": 16000}}}))
PY
"$GRPCURL" -plaintext -d @ "$addr" slng.speech.v1.TextToSpeechService/SynthesizeText \
	<"$work/tts-request.json" >"$work/tts.json"
python3 scripts/grpcurl_audio.py pcm "$work/tts.json" "$work/audio.pcm" "$work/audio.wav" 16000
echo "smoke: synthesized $(stat -c %s "$work/audio.pcm") bytes of audio"

# 2. Transcribe exactly that audio, in 100 ms chunks, then half-close.
python3 scripts/grpcurl_audio.py transcribe-requests "$work/audio.pcm" 16000 >"$work/stt-requests.json"
"$GRPCURL" -plaintext -d @ "$addr" slng.speech.v1.SpeechToTextService/Transcribe \
	<"$work/stt-requests.json" >"$work/stt.json"
got=$(python3 scripts/grpcurl_audio.py finals "$work/stt.json")
if [[ "$got" != "$TEXT" ]]; then
	echo "smoke: transcript mismatch" >&2
	echo "  want: $TEXT" >&2
	echo "  got:  $got" >&2
	exit 1
fi
echo "smoke: transcribed back: $got"

# 3. The same round trip with speechctl: a WAV file and back.
"$BIN/speechctl" health --addr "$addr" >/dev/null
"$BIN/speechctl" synthesize --addr "$addr" --text "$TEXT" --rate 16000 --out "$work/ctl.wav" 2>"$work/ctl.log"
got=$("$BIN/speechctl" transcribe --addr "$addr" "$work/ctl.wav" 2>>"$work/ctl.log" | paste -sd ' ')
if [[ "$got" != "$TEXT" ]]; then
	cat "$work/ctl.log" >&2
	echo "smoke: speechctl round trip: got \"$got\"" >&2
	exit 1
fi
echo "smoke: speechctl transcribed its own WAV back"
# A bad request prints the status, the reason and what to do, and fails.
if "$BIN/speechctl" synthesize --addr "$addr" --out "$work/bad.raw" </dev/null 2>"$work/bad.log"; then
	echo "smoke: speechctl accepted empty text" >&2
	exit 1
fi
grep -q 'InvalidArgument' "$work/bad.log" && grep -q 'reason: INVALID_REQUEST' "$work/bad.log"

# 4. SIGTERM: clean exit, status 0.
rc=0
stop_gateway || rc=$?
if [[ $rc -ne 0 ]]; then cat "$work/gateway.log" >&2; echo "smoke: gateway exited with $rc after SIGTERM" >&2; exit 1; fi
grep -q '"msg":"stopped"' "$work/gateway.log"
if grep -q 'dev_[0-9a-f]\{32\}' "$work/gateway.log"; then echo "smoke: the key leaked into the log" >&2; exit 1; fi
echo "smoke: ok"
