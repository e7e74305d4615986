#!/bin/bash
# ab.sh OLD NEW [ROUNDS]: runs two gateway binaries alternately against the
# floor, pinned, at 500 TTS and 250 STT streams, and prints for each run the
# gateway's and the floor's CPU per chunk and their ratio. Run from the
# repository root after `make build`. Compare medians: one run varies by
# about ±0.1 in the ratio on a shared 2-CPU host.
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq "$rounds"); do
  for gw in "$old" "$new"; do
    bin/speechbench --pin --floor bin/speechfloor --sim bin/slngsim --gateway "$gw" \
      --only tts,stt --tts-levels 500 --stt-levels 250 --wave 6s --out "$out" >/dev/null
    python3 - "$gw" "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[2]))
print("%s  tts500 %.1f/%.1f = %.2f  stt250 %.1f/%.1f = %.2f  tts added p99 %.1f/%.1f ms" % (
    sys.argv[1], d["gateway_cpu_us_per_chunk"], d["floor_cpu_us_per_chunk"], d["cpu_ratio_to_floor"],
    d["stt_gateway_cpu_us_per_chunk"], d["stt_floor_cpu_us_per_chunk"], d["stt_cpu_ratio_to_floor"],
    d["added_latency_p99_ms"], d["floor_added_latency_p99_ms"]))
PY
  done
done
