#!/usr/bin/env bash
# The serving install: `pip install .` without extras (no torch, no transformers, no test tools) must
# build the seed index and answer a search. Uses the models fetched and exported by `make model`.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --upgrade pip
"$work/venv/bin/pip" install --quiet .
if "$work/venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "serving install pulled in torch" >&2
    exit 1
fi
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export DJQA_MODELS_DIR="$PWD/models" DJQA_SEEDS_DIR="$PWD/seeds" DJQA_CACHE_DIR="$PWD/data/cache"
export DJQA_INDEX_DIR="$work/index" DJQA_UPLOADS_DIR="$work/uploads"
"$work/venv/bin/dangjian-qa" serve --build-missing --port "$port" > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/api/health" > /dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 1
done
curl -sfG "http://127.0.0.1:$port/api/search" --data-urlencode "q=党风廉政建设主体责任" -d top_k=1 \
    | python3 -c 'import json, sys; rows = json.load(sys.stdin)["results"]; assert rows, "no result"; print("serving install answers:", rows[0]["title"])'
