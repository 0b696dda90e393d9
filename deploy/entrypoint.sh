#!/bin/sh
# The edgegw image's entrypoint (deploy/Containerfile). Checks what the image needs at run
# time and says what is missing in one line, then execs, so the gateway gets the signals.
#
#   serve [ARGS]   edgegw serve -c $EDGEGW_CONFIG_FILE ARGS (the default)
#   check          edgegw check -c $EDGEGW_CONFIG_FILE
#   healthcheck    exit 0 when $EDGEGW_HEALTH_URL answers 200 (the image's HEALTHCHECK)
#   anything else  run as given
set -eu

config="${EDGEGW_CONFIG_FILE:-/etc/edgegw/gateway.yaml}"
runtime="${EDGEGW_RUNTIME_DIR:-/run/edgegw}"
health="${EDGEGW_HEALTH_URL:-http://127.0.0.1:9901/healthz}"

fail() {
    echo "edgegw-entrypoint: $2" >&2
    exit "$1"
}

need_config() {
    [ -r "$config" ] || fail 2 "no readable config at $config: mount gateway.yaml there \
(or set EDGEGW_CONFIG_FILE)"
}

# With a read-only root filesystem the runtime dir (worker status, metrics, compiled
# filters) must be a writable mount: a tmpfs, or an emptyDir in Kubernetes.
need_runtime() {
    mkdir -p "$runtime" 2>/dev/null || true
    probe="$runtime/.entrypoint-$$"
    # In a subshell: a failed redirection on a special builtin exits the shell (POSIX).
    if ! (: >"$probe") 2>/dev/null; then
        fail 1 "$runtime is not writable by uid $(id -u): mount a tmpfs there \
(docker run --tmpfs $runtime, a Kubernetes emptyDir)"
    fi
    rm -f "$probe"
}

command="${1:-serve}"
[ $# -gt 0 ] && shift
case "$command" in
serve)
    need_config
    need_runtime
    exec edgegw serve -c "$config" "$@"
    ;;
check)
    need_config
    exec edgegw check -c "$config" "$@"
    ;;
healthcheck)
    exec python3 - "$health" <<'PY'
import sys
import urllib.request

try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except OSError as exc:
    print(f"edgegw-entrypoint: healthcheck {sys.argv[1]}: {exc}", file=sys.stderr)
    sys.exit(1)
PY
    ;;
*)
    exec "$command" "$@"
    ;;
esac
