#!/usr/bin/env bash
# Build the serving image (Dockerfile) with a run baked in, start the server inside it with the
# image's own default command, check it from the host, stop it. Exits non-zero on any failure.
#
#   docker/verify.sh [RUN_DIR]        (default: artifacts/model; needs RUN_DIR/serving)
#
# No Docker engine needed: the image is built and run by ../shared/tools/container-check.sh
# (buildah, chroot isolation, the host's network; override with CONTAINER_CHECK=path). That
# script takes no --build-arg, so the check builds a copy of the Dockerfile whose MODEL_DIR
# default names the bundle, hard-linked under artifacts/.verify-PID/ (removed at the end) — the
# same thing as `docker build --build-arg MODEL_DIR=artifacts/.verify-PID .` on the real context
# and the real .dockerignore.
#
# Checks: the image's HEALTHCHECK command passes inside the container (as its non-root user);
# from the host: GET /health and /ready answer 200, a known user gets 10 ranked recommendations
# (strategy "ranker"), an unknown user the popular list, and after POST /v1/orders (the embedded
# stores in the image's state folder) personal, fresh ones; no training library is installed in the
# image; the server stops on SIGTERM. PORT=... picks the port (default: a free one); DOCKERFILE=...
# checks another Dockerfile (default: the repo's); KEEP_IMAGE=1 keeps the built image.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
run_dir=$(realpath "${1:-artifacts/model}")
check=${CONTAINER_CHECK:-$repo/../shared/tools/container-check.sh}
dockerfile=${DOCKERFILE:-Dockerfile}
py=python3
[ -x "$repo/.venv/bin/python" ] && py=$repo/.venv/bin/python
port=${PORT:-$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
bundle=$run_dir
[ -f "$bundle/serving/ranker.onnx" ] && bundle=$bundle/serving
if [ ! -f "$bundle/manifest.json" ] || [ ! -f "$bundle/ranker.onnx" ]; then
  echo "verify: no serving bundle (serving/manifest.json + ranker.onnx) in $run_dir" >&2
  exit 2
fi
[ -x "$check" ] || [ -f "$check" ] || { echo "verify: $check not found" >&2; exit 2; }

work=artifacts/.verify-$$
log=$(mktemp -t basketcast-verify.XXXXXX.log)
check_pid=""
server_pid=""
cleanup() {
  status=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -TERM "$server_pid" 2>/dev/null || true; fi
  if [ -n "$check_pid" ]; then
    for _ in $(seq 60); do kill -0 "$check_pid" 2>/dev/null || break; sleep 0.5; done
    kill -TERM "$check_pid" 2>/dev/null || true
    wait "$check_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  # the image built here (with the bundle baked in): removed unless KEEP_IMAGE=1
  image_id=$(grep -E '^[0-9a-f]{64}$' "$log" | tail -1 || true)
  if [ -n "$image_id" ] && [ "${KEEP_IMAGE:-0}" != 1 ]; then buildah rmi "$image_id" >/dev/null 2>&1 || true; fi
  if [ "$status" -ne 0 ]; then echo "verify: FAILED (log: $log)" >&2; tail -40 "$log" >&2; fi
  exit "$status"
}
trap cleanup EXIT

# The bundle inside the context (hard links when possible: no copy of the arrays).
mkdir -p "$work"
cp -al "$bundle" "$work/serving" 2>/dev/null || cp -r "$bundle" "$work/serving"
sed "s|^ARG MODEL_DIR=.*|ARG MODEL_DIR=$work|" "$dockerfile" >"$work/Dockerfile"
grep -q "^ARG MODEL_DIR=$work\$" "$work/Dockerfile" || { echo "verify: no 'ARG MODEL_DIR=' line in Dockerfile" >&2; exit 1; }

# The image's own CMD (exec form) and HEALTHCHECK command, read from the Dockerfile.
mapfile -t image_cmd < <($py - "$dockerfile" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
cmd = re.findall(r"^CMD (\[.*\])\s*$", text, re.MULTILINE)[-1]
print("\n".join(json.loads(cmd)))
print(re.search(r"^HEALTHCHECK .*? CMD (.+)$", text, re.MULTILINE).group(1).strip())
EOF
)
healthcheck=${image_cmd[-1]}
unset 'image_cmd[-1]'

# Inside the container (host network): the default command on 127.0.0.1:PORT in the background,
# then the HEALTHCHECK command until it passes, then wait for the server (stopped from the host).
# shellcheck disable=SC2016  # expanded inside the container
inside='
  hc=$1; shift
  BASKETCAST_HOST=127.0.0.1 BASKETCAST_PORT='"$port"' timeout 600 "$@" & pid=$!
  echo "SERVER_PID=$pid"
  python -c "import importlib.metadata as m; print(\"PACKAGES \" + \" \".join(sorted(d.metadata[\"Name\"] + \"==\" + d.version for d in m.distributions())))"
  echo "USER $(id -un) uid=$(id -u)"
  i=0
  until BASKETCAST_PORT='"$port"' sh -c "$hc" 2>/dev/null; do
    i=$((i + 1)); [ $i -le 180 ] || { echo "HEALTHCHECK never passed"; kill $pid; exit 1; }
    kill -0 $pid 2>/dev/null || { echo "server exited"; exit 1; }
    sleep 1
  done
  echo "HEALTHCHECK OK"
  wait $pid; echo "SERVER_EXIT=$?"
'
echo "verify: building the image (run $run_dir baked in) and starting it on 127.0.0.1:$port; log $log"
"$check" --context "$repo" --dockerfile "$work/Dockerfile" -- sh -c "$inside" sh "$healthcheck" "${image_cmd[@]}" \
  >"$log" 2>&1 &
check_pid=$!

# Wait for the container's health check (the build takes a few minutes the first time).
deadline=$((SECONDS + 1200))
until grep -q "^HEALTHCHECK OK" "$log"; do
  kill -0 "$check_pid" 2>/dev/null || { echo "verify: the build or the server stopped early" >&2; exit 1; }
  [ $SECONDS -lt $deadline ] || { echo "verify: not healthy after 20 min" >&2; exit 1; }
  sleep 2
done
server_pid=$(sed -n 's/^SERVER_PID=//p' "$log" | tail -1)
grep "^USER " "$log"

# From the host.
$py - "$port" "$bundle" "$log" <<'EOF'
import json, re, sys, urllib.error, urllib.request
import numpy as np

port, bundle, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
base = f"http://127.0.0.1:{port}"


def get(path):
    try:
        with urllib.request.urlopen(base + path, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


for path in ("/health", "/ready"):
    status, body = get(path)
    assert status == 200, f"GET {path} -> {status} {body}"
    print(f"verify: GET {path} -> {status} {json.dumps(body)[:160]}")
users = np.load(f"{bundle}/users.npy", mmap_mode="r")
known = int(users[len(users) // 2])
status, body = get(f"/v1/users/{known}/recommendations?k=10")
items = body.get("items") or []
assert status == 200 and len(items) == 10 and body.get("strategy") == "ranker", body
print(f"verify: GET /v1/users/{known}/recommendations?k=10 -> {status}, {len(items)} items, strategy ranker, "
      f"first {json.dumps(items[0])[:160]}")
unknown = int(users[-1]) + 1_000_000
status, body = get(f"/v1/users/{unknown}/recommendations?k=5")
assert status == 200 and body.get("strategy") == "popular", body
print(f"verify: GET /v1/users/{unknown}/recommendations?k=5 (unknown) -> {status}, strategy popular")
# An order of the unknown user, recorded in the image's embedded stores (BASKETCAST_STATE_DIR,
# owned by the non-root user): their next answer is personal and fresh.
popular = [item["product_id"] for item in body["items"][:2]]
order = {"order_id": f"verify-{unknown}", "user_id": unknown, "products": popular}
request = urllib.request.Request(
    base + "/v1/orders", data=json.dumps(order).encode(), headers={"content-type": "application/json"}
)
with urllib.request.urlopen(request, timeout=30) as r:
    status, answer = r.status, json.loads(r.read())
assert status == 201 and answer["fresh"] is True, answer
status, body = get(f"/v1/users/{unknown}/recommendations?k=5")
assert status == 200 and body.get("strategy") == "ranker" and body.get("freshness") == "fresh", body
print(f"verify: POST /v1/orders -> 201 fresh; the new shopper's next answer: strategy ranker, freshness fresh")
packages = re.search(r"^PACKAGES (.*)$", open(log).read(), re.MULTILINE).group(1).split()
names = {p.split("==")[0].lower().replace("_", "-") for p in packages}
heavy = names & {"lightgbm", "xgboost", "xgboost-cpu", "implicit", "mlflow", "torch", "matplotlib", "scikit-learn"}
assert not heavy, f"training libraries in the serving image: {sorted(heavy)}"
print(f"verify: {len(packages)} packages in the image, no training library: {' '.join(packages)}")
EOF

# Stop: SIGTERM to the server (the same PID namespace as the host with chroot isolation).
kill -TERM "$server_pid"
for _ in $(seq 60); do kill -0 "$check_pid" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$check_pid" 2>/dev/null; then echo "verify: the server did not stop on SIGTERM" >&2; exit 1; fi
wait "$check_pid" || true
check_pid=""
grep -q "^SERVER_EXIT=0$" "$log" || { echo "verify: the server did not exit cleanly on SIGTERM" >&2; exit 1; }
echo "verify: the server stopped cleanly on SIGTERM"
size=$(buildah images --format '{{.Size}}' localhost/container-check:latest 2>/dev/null | head -1 || true)
echo "verify: OK (image localhost/container-check:latest with the bundle, ${size:-size unknown}; log $log)"
