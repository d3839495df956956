#!/usr/bin/env bash
# The serving install: `pip install .` without extras (no torch, no transformers, no test tools, no Milvus
# client, no language-model client) must build the seed index and answer a search, and must say which
# extra to install when a setting needs one. Uses the models fetched and exported by `make model`.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
# Not `kill "${server:-0}"`: kill 0 signals this script's whole process group.
trap 'if [[ -n "${server:-}" ]]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --upgrade pip
"$work/venv/bin/pip" install --quiet .
# (httpx2, the llm extra's HTTP client, also comes with tokenizers' huggingface-hub: it may be installed.)
for package in torch pymilvus milvus_lite openai; do
    if "$work/venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$package') is None)"; then
        echo "serving install pulled in $package" >&2
        exit 1
    fi
done
# ...and the serving code does not import them either (it would fail above; this names the culprit).
(cd "$work" && "$work/venv/bin/python" -c "
import sys, service.cli, service.serve, service.http.app, service.engine
found = {'pymilvus', 'milvus_lite', 'openai', 'httpx2'} & set(sys.modules)
assert not found, f'serving imports {found}'")
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
kill "$server"; wait "$server" 2>/dev/null || true
# A setting that needs an extra names it (exit 3), instead of an ImportError's traceback.
expect_extra() {
    local extra="$1"; shift
    set +e
    env "$@" "$work/venv/bin/dangjian-qa" serve --port "$port" > "$work/extra.log" 2>&1
    local code=$?
    set -e
    if [[ $code -ne 3 ]] || ! grep -q "pip install 'dangjian-qa\[$extra\]'" "$work/extra.log"; then
        echo "expected exit 3 naming the $extra extra, got $code:" >&2; cat "$work/extra.log" >&2; exit 1
    fi
    echo "without the $extra extra: $(grep -o '错误：.*' "$work/extra.log" | head -1)"
}
expect_extra milvus DJQA_STORE=milvus DJQA_MILVUS_URI="$work/milvus.db"
expect_extra llm DJQA_LLM_BASE_URL=http://127.0.0.1:9/v1
