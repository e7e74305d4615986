#!/usr/bin/env bash
# Load test with ghz: CONCURRENCY (first argument, default 1000) concurrent
# SynthesizeText calls against the real binary in dev mode, with the
# gateway's stream limit set below that concurrency. Every call must succeed
# or end with the documented RESOURCE_EXHAUSTED (GATEWAY_OVERLOADED); any
# other status fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-./bin}
CONCURRENCY=${1:-1000}
MAX_STREAMS=${MAX_STREAMS:-$((CONCURRENCY / 2))}
TOTAL=${TOTAL:-$((CONCURRENCY * 5))}
work=$(mktemp -d)
me=load
. scripts/gateway.sh
trap cleanup_gateway EXIT

start_gateway --dev --listen 127.0.0.1:0 --admin-listen '' --max-streams "$MAX_STREAMS" --max-streams-per-conn 10000
echo "load: gateway on $addr, --max-streams $MAX_STREAMS, $TOTAL calls at concurrency $CONCURRENCY"

"$BIN/ghz" --insecure --call slng.speech.v1.TextToSpeechService/SynthesizeText \
	-d '{"text": "A short answer under load."}' \
	--concurrency "$CONCURRENCY" --connections 8 --total "$TOTAL" --timeout 30s \
	--format json --output "$work/ghz.json" "$addr" || true

python3 - "$work/ghz.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
dist = r.get("statusCodeDistribution", {})
errs = r.get("errorDistribution", {}) or {}
print("load: %d calls in %.1f s, %.0f calls/s; latency p50 %.1f ms, p99 %.1f ms" % (
    r["count"], r["total"] / 1e9, r["rps"],
    next((l["latency"] for l in r.get("latencyDistribution") or [] if l["percentage"] == 50), 0) / 1e6,
    next((l["latency"] for l in r.get("latencyDistribution") or [] if l["percentage"] == 99), 0) / 1e6))
print("load: status codes", dist)
for e, n in errs.items():
    print("load:   %6d  %s" % (n, e))
bad = {k: v for k, v in dist.items() if k not in ("OK", "ResourceExhausted")}
bad_errs = {e: n for e, n in errs.items() if "gateway stream limit reached" not in e}
if bad or bad_errs:
    print("load: FAIL: statuses other than OK and the documented RESOURCE_EXHAUSTED")
    sys.exit(1)
print("load: ok")
PY
