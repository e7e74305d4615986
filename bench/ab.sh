#!/bin/bash
# ab.sh OLD NEW [ROUNDS]: runs two gateway binaries alternately against the
# floor, pinned, at TTS_LEVEL TTS streams (default 500) and STT_LEVEL STT
# streams (default 100), and prints for each run, then as medians per
# binary: the gateway's CPU per chunk over the floor's (TTS, STT), the
# added latency over the floor's (TTS p99, STT p50) and the RSS per stream
# over the floor's. Run from the repository root after `make build`; BIN
# (default bin) holds speechbench, speechfloor and slngsim. One run varies
# by about ±0.1 in a ratio on a shared 2-CPU host: compare medians.
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
bin=${BIN:-bin}
tts=${TTS_LEVEL:-500} stt=${STT_LEVEL:-100}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for r in $(seq "$rounds"); do
  for side in old new; do
    gw=$old
    [[ $side == new ]] && gw=$new
    "$bin/speechbench" --pin --floor "$bin/speechfloor" --sim "$bin/slngsim" --gateway "$gw" \
      --only tts,stt --tts-levels "$tts" --stt-levels "$stt" --wave 6s --out "$dir/$side-$r.json" >/dev/null
  done
done
python3 - "$dir" "$rounds" "$old" "$new" <<'PY'
import json, statistics, sys
d, rounds, names = sys.argv[1], int(sys.argv[2]), {"old": sys.argv[3], "new": sys.argv[4]}
def row(side, r):
    j = json.load(open(f"{d}/{side}-{r}.json"))
    t, s = j["tts_levels"][0], j["stt_levels"][0]
    ratio = lambda a, b: a / b if b else float("nan")
    return {
        "tts cpu": ratio(t["gateway_cpu_us_per_chunk"], t["floor_cpu_us_per_chunk"]),
        "stt cpu": ratio(s["gateway_cpu_us_per_chunk"], s["floor_cpu_us_per_chunk"]),
        "tts p99": ratio(t["added_p99_ms"], t["floor_added_p99_ms"]),
        "stt p50": ratio(s["added_p50_ms"], s["floor_added_p50_ms"]),
        "rss": ratio(t["gateway_rss_per_stream_kib"], t["floor_rss_per_stream_kib"]),
        "gw rss KiB": t["gateway_rss_per_stream_kib"],
    }
keys = ["tts cpu", "stt cpu", "tts p99", "stt p50", "rss", "gw rss KiB"]
print("%-5s %-3s " % ("", "run") + " ".join("%10s" % k for k in keys))
rows = {side: [row(side, r) for r in range(1, rounds + 1)] for side in ("old", "new")}
for side in ("old", "new"):
    for r, x in enumerate(rows[side], 1):
        print("%-5s %-3d " % (side, r) + " ".join("%10.2f" % x[k] for k in keys))
for side in ("old", "new"):
    print("%-5s %-3s " % (side, "med") + " ".join("%10.2f" % statistics.median(x[k] for x in rows[side]) for k in keys)
          + "   " + names[side])
PY
