#!/usr/bin/env bash
# Builds the speech-gateway API for Python callers as wheels, with no
# package index: from proto/ and the vendored googleapis protos
# (clients/third_party/googleapis), with Debian's protoc, gRPC plugin and
# Python build tools.
#
#   clients/python/build.sh OUT VERSION
#
# writes into OUT:
#   speech_gateway_api-VERSION-py3-none-any.whl              slng.speech.v1 (messages, stubs, .pyi)
#   speech_gateway_googleapis_rpc-VERSION-py3-none-any.whl   google.rpc status and error details
#
# The googleapis wheel is for machines without PyPI; with it, callers use
# googleapis-common-protos instead. docs/clients.md shows how a caller
# depends on each.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ $# -ne 2 ]]; then
	echo "usage: $0 OUT VERSION" >&2
	exit 2
fi
out=$1
version=$2
BIN=${BIN:-./bin}
# buf runs protoc_builtin plugins with the protoc first on PATH: Debian's
# 3.21, whose Python code suits the protobuf 4.21 runtime the wheels require.
export PATH="/usr/bin:$PATH"

missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v grpc_python_plugin >/dev/null || missing+=(protobuf-compiler-grpc)
/usr/bin/python3 -c 'import build, setuptools, wheel' 2>/dev/null || missing+=(python3-build python3-setuptools python3-wheel)
if ((${#missing[@]})); then
	echo "clients-python needs Debian's ${missing[*]} (apt-get install -y ${missing[*]})" >&2
	exit 1
fi

googleapis=clients/third_party/googleapis
rpc_protos=(google/rpc/status.proto google/rpc/error_details.proto)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
rm -f "$out"/speech_gateway_*.whl

# wheel DIR: builds the Python project staged in DIR into $work/whl, with
# the LICENSE, which setuptools puts in the wheel's metadata.
wheel() {
	echo "$version" >"$1/VERSION"
	cp LICENSE "$1/"
	(cd "$1" && /usr/bin/python3 -m build --no-isolation --wheel --outdir "$work/whl" . >"$work/build.log" 2>&1) || {
		cat "$work/build.log" >&2
		exit 1
	}
}

# The API, typed (.pyi and py.typed), and google.rpc.
mkdir -p "$work/py-api" "$work/py-rpc"
cp clients/python/api/pyproject.toml "$work/py-api/"
"$BIN/buf" generate --template buf.gen.python.yaml -o "$work/py-api"
touch "$work/py-api/slng/speech/v1/py.typed"
wheel "$work/py-api"
cp clients/python/googleapis-rpc/pyproject.toml "$work/py-rpc/"
protoc -I "$googleapis" --python_out="$work/py-rpc" --pyi_out="$work/py-rpc" "${rpc_protos[@]}"
touch "$work/py-rpc/google/rpc/py.typed"
wheel "$work/py-rpc"
cp "$work"/whl/*.whl "$out/"
ls -l "$out"/speech_gateway_*.whl
