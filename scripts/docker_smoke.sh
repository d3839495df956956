#!/usr/bin/env bash
# Docker smoke test: build the image, run it, wait until it is healthy, run a search, check that the
# image holds no torch, print build time, start-up time and image size, remove the container.
#
#   scripts/docker_smoke.sh                # base python:3.11-slim from your registry
#   scripts/docker_smoke.sh --local-base   # no registry: debootstrap Debian bookworm (python3.11, venv,
#                                          # pip, ca-certificates, make) and `docker import` it as the base
#
# Optional environment:
#   DOCKER           docker CLI with BuildKit (default: docker)
#   IMAGE            tag to build (dangjian-qa:smoke)
#   BASE_IMAGE       base image (python:3.11-slim; local/python311-base with --local-base)
#   CA_BUNDLE        CA bundle passed as the build secret ca_bundle (for networks that intercept TLS)
#   TORCH_WHEEL_DIR  folder holding a torch CPU wheel: served on 127.0.0.1:TORCH_INDEX_PORT (18081) as
#                    TORCH_INDEX_URL, for machines that cannot reach download.pytorch.org
#   PORT             port the container serves on, with host networking (18000)
#   KEEP=1           leave the container running
# A run on a machine without registry access (see README: about 3 min from an empty build cache, plus
# 3 min once for the base; 2 min after a source edit):
#   CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt TORCH_WHEEL_DIR=/opt/wheels DOCKER=/usr/bin/docker \
#       scripts/docker_smoke.sh --local-base
# (DOCKER=/usr/bin/docker: Debian's 20.10 CLI, since the newer `docker` on PATH there has no buildx.)
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
IMAGE=${IMAGE:-dangjian-qa:smoke}
PORT=${PORT:-18000}
QUERY=${QUERY:-党风廉政建设}
LOCAL_BASE=0
[[ ${1:-} == --local-base ]] && LOCAL_BASE=1
if ((LOCAL_BASE)); then BASE_IMAGE=${BASE_IMAGE:-local/python311-base}; else BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}; fi
export DOCKER_BUILDKIT=1

container="" index_pid="" work=$(mktemp -d)
cleanup() {
    [[ -n $container && ${KEEP:-0} != 1 ]] && "$DOCKER" rm -f "$container" >/dev/null 2>&1
    [[ -n $index_pid ]] && kill "$index_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

if ((LOCAL_BASE)) && ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "== debootstrap bookworm → $BASE_IMAGE"
    start=$(now)
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,make \
        bookworm "$work/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" \
        || { tail -20 "$work/debootstrap.log"; exit 1; }
    rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/*
    tar -C "$work/rootfs" -c . | "$DOCKER" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$work/rootfs"
    echo "   base image built in $(since "$start") s"
fi

build_args=(--network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE")
[[ -n ${CA_BUNDLE:-} ]] && build_args+=(--secret "id=ca_bundle,src=$CA_BUNDLE")
if [[ -n ${TORCH_WHEEL_DIR:-} ]]; then
    # A one-project PEP 503 index: http.server's listing of torch/ is the project page pip reads.
    mkdir -p "$work/index/torch"
    cp -l "$TORCH_WHEEL_DIR"/torch-*.whl "$work/index/torch/" 2>/dev/null || cp "$TORCH_WHEEL_DIR"/torch-*.whl "$work/index/torch/"
    # A fixed port: the URL is a build argument, and a new value would invalidate the build cache.
    index_port=${TORCH_INDEX_PORT:-18081}
    python3 -m http.server "$index_port" --bind 127.0.0.1 --directory "$work/index" >/dev/null 2>&1 &
    index_pid=$!
    for _ in $(seq 50); do curl -sf "127.0.0.1:$index_port/torch/" >/dev/null && break; sleep 0.1; done
    curl -sf "127.0.0.1:$index_port/torch/" >/dev/null || { echo "cannot serve $TORCH_WHEEL_DIR on port $index_port"; exit 1; }
    build_args+=(--build-arg "TORCH_INDEX_URL=http://127.0.0.1:$index_port/")
fi

echo "== build $IMAGE (base $BASE_IMAGE)"
start=$(now)
# pipefail makes the pipeline fail with the build; grep finding no line is not a failure.
if ! "$DOCKER" build "${build_args[@]}" . 2>&1 | tee "$work/build.log" | { grep -E '^#[0-9]+ (\[|DONE|ERROR)|^ERROR' || true; }; then
    echo "the build failed:"; tail -30 "$work/build.log"; exit 1
fi
build_seconds=$(since "$start")

echo "== run on 127.0.0.1:$PORT"
start=$(now)
container=$("$DOCKER" run -d --network host -e "DJQA_PORT=$PORT" --health-interval 1s "$IMAGE")
status=starting
for _ in $(seq 120); do
    status=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$container")
    [[ $status == healthy || $status == unhealthy ]] && break
    sleep 1
done
healthy_seconds=$(since "$start")
if [[ $status != healthy ]]; then
    echo "container is $status:"; "$DOCKER" logs "$container" 2>&1 | tail -30; exit 1
fi
curl -sf "127.0.0.1:$PORT/api/health" >"$work/health.json"
curl -sfG "127.0.0.1:$PORT/api/search" --data-urlencode "q=$QUERY" >"$work/search.json"
python3 - "$work/health.json" "$work/search.json" "$QUERY" <<'EOF'
import json, sys
health, search = (json.load(open(path)) for path in sys.argv[1:3])
results = search["results"]
assert results, "no results"
print(f"   health: {health['status']}, {health.get('documents')} documents, {health.get('passages')} passages")
print(f"   search {sys.argv[3]!r}: {len(results)} results in {search['took_ms']} ms; top: {results[0]['title']} — {results[0]['text'][:40]}…")
EOF
"$DOCKER" exec "$container" python -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ("torch", "transformers", "pytest")))' \
    || { echo "the image holds torch, transformers or pytest"; exit 1; }
"$DOCKER" exec "$container" sh -c 'test "$(id -u)" != 0 && touch /app/data/.writable && rm /app/data/.writable' \
    || { echo "the service user is root or cannot write /app/data"; exit 1; }

size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
echo "== ok: build ${build_seconds} s, healthy ${healthy_seconds} s after docker run, image $((size / 1000000)) MB"
