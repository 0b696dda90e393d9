#!/bin/sh
# Runs a built edgegw image as deployed: read-only root, a tmpfs runtime dir, the image's
# user, a bundled filter, the HEALTHCHECK command, SIGTERM -> exit 0. Everything listens
# on 127.0.0.1 (host network). Not part of `make test`: it needs a container engine.
#   deploy/smoke-image.sh [IMAGE]          (default localhost/edgegw:latest)
#   ENGINE=docker deploy/smoke-image.sh    (default podman)
set -eu
image="${1:-localhost/edgegw:latest}"
engine="${ENGINE:-podman}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port) admin=$(free_port) demo=$(free_port)
work=$(mktemp -d)
gw="edgegw-smoke-$$" backend="edgegw-smoke-demo-$$"
cleanup() { "$engine" rm -f "$gw" "$backend" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
cat >"$work/gateway.yaml" <<YAML
version: 1
listen: 127.0.0.1:$port
admin: {listen: "127.0.0.1:$admin", token: "\${EDGEGW_ADMIN_TOKEN}"}
backends: {users: "http://127.0.0.1:$demo"}
filters:
  ratelimit:
    wasm: /opt/edgegw/filters/rate_limit.wasm
    config: {mode: local, policies: [{name: all, rate: 100, period: 1s, key: [ip]}]}
routes:
  - {name: users, match: {prefix: /users}, filters: [ratelimit], backend: users}
YAML
chmod 0755 "$work" && chmod 0644 "$work/gateway.yaml"
# The tmpfs must belong to the image's user: podman's option U does that, docker takes
# the owner as options.
tmpfs="/run/edgegw:U,mode=0750"
[ "$engine" = docker ] && tmpfs="/run/edgegw:uid=10001,gid=10001,mode=0750"
"$engine" run -d --name "$backend" --network host --read-only "$image" \
    edgegw demo --host 127.0.0.1 --base-port "$demo" >/dev/null
"$engine" run -d --name "$gw" --network host --read-only --tmpfs "$tmpfs" \
    --cap-drop ALL --security-opt no-new-privileges \
    -v "$work:/etc/edgegw:ro" -e EDGEGW_ADMIN_TOKEN=smoke-token \
    -e EDGEGW_HEALTH_URL="http://127.0.0.1:$admin/healthz" "$image" >/dev/null
i=0
until "$engine" exec "$gw" edgegw-entrypoint healthcheck 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 60 ] || { "$engine" logs "$gw"; echo "smoke: not healthy" >&2; exit 1; }
    sleep 1
done
# The admin API answers first; the data plane opens once the workers have started.
body=$(python3 - "http://127.0.0.1:$port/users/42" <<'PY'
import sys, time, urllib.request
for _ in range(60):
    try:
        print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
        break
    except OSError:
        time.sleep(1)
PY
)
case "$body" in *'"service"'*) ;; *) echo "smoke: unexpected answer: $body" >&2; exit 1 ;; esac
[ "$("$engine" exec "$gw" id -u)" = 10001 ] || { echo "smoke: not running as 10001" >&2; exit 1; }
if "$engine" exec "$gw" touch /opt/edgegw/x 2>/dev/null; then
    echo "smoke: the root filesystem is writable" >&2; exit 1
fi
"$engine" exec "$gw" sh -c 'ls /run/edgegw/wasm-cache/*.cwasm' >/dev/null
"$engine" stop -t 45 "$gw" >/dev/null
code=$("$engine" inspect "$gw" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || { "$engine" logs "$gw"; echo "smoke: exit code $code after SIGTERM" >&2; exit 1; }
echo "smoke: OK ($image: served /users/42 through rate_limit as uid 10001, read-only root, exit 0 on SIGTERM)"
