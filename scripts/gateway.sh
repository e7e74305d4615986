# Sourced by the scripts that drive the real binary: start_gateway runs
# speech-gateway with the given flags, logging JSON into $work/gateway.log,
# and waits until it serves; it sets gw_pid, addr and admin. The caller
# defines $work, $BIN and a name for messages ($me), and calls
# stop_gateway (or lets cleanup_gateway run from its EXIT trap).

gw_pid=
addr=
admin=

start_gateway() {
	"$BIN/speech-gateway" --log-format json "$@" 2>"$work/gateway.log" &
	gw_pid=$!
	for _ in $(seq 1 100); do
		if line=$(grep -m1 '"msg":"serving"' "$work/gateway.log" 2>/dev/null); then
			addr=$(sed -E 's/.*"grpc":"([^"]+)".*/\1/' <<<"$line")
			admin=$(sed -E 's/.*"admin":"([^"]*)".*/\1/' <<<"$line")
			return 0
		fi
		if ! kill -0 "$gw_pid" 2>/dev/null; then break; fi
		sleep 0.1
	done
	cat "$work/gateway.log" >&2
	echo "$me: the gateway did not start" >&2
	exit 1
}

# stop_gateway sends SIGTERM and returns the gateway's exit status.
stop_gateway() {
	local rc=0
	kill -TERM "$gw_pid"
	wait "$gw_pid" || rc=$?
	gw_pid=
	return $rc
}

cleanup_gateway() {
	if [[ -n "$gw_pid" ]] && kill -0 "$gw_pid" 2>/dev/null; then kill -KILL "$gw_pid" || true; fi
	rm -rf "$work"
}
