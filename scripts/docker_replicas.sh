#!/usr/bin/env bash
# Two containers of the service image as stateless replicas on one store: Milvus Lite's gRPC server on
# the host (host networking). Copies the image's own seed index into it (`dangjian-qa migrate`), uploads
# a document through one replica and finds it through the other, stops the store (503
# store_unavailable) and starts it again (200). Build the image first (scripts/docker_smoke.sh).
#   IMAGE   the image (dangjian-qa:smoke)   DOCKER   the docker CLI (docker)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMG=${IMAGE:-dangjian-qa:smoke}
D=${DOCKER:-docker}
PORT=19810
KEY=replica-check
SCRATCH=$(mktemp -d)
trap '$D rm -f r1 r2 >/dev/null 2>&1 || true; [[ -f $SCRATCH/milvus.pid ]] && kill "$(cat "$SCRATCH/milvus.pid")" 2>/dev/null; rm -rf "$SCRATCH"' EXIT
fail() { echo "FAILED: $*" >&2; exit 1; }
start_milvus() {
  "$ROOT/.venv/bin/python" -m milvus_lite server --data-dir "$SCRATCH/milvus" --host 127.0.0.1 --port $PORT >> "$SCRATCH/milvus.log" 2>&1 &
  echo $! > "$SCRATCH/milvus.pid"
  for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return; sleep 0.2; done
}
start_milvus
ENV=(-e DJQA_STORE=milvus -e DJQA_MILVUS_URI=http://127.0.0.1:$PORT -e DJQA_API_KEY=$KEY -e DJQA_MILVUS_TIMEOUT_S=3)
echo "== migrate inside the image"
$D run --rm --network host "${ENV[@]}" $IMG dangjian-qa migrate
$D rm -f r1 r2 >/dev/null 2>&1 || true
$D run -d --name r1 --network host "${ENV[@]}" -e DJQA_PORT=8101 $IMG >/dev/null
$D run -d --name r2 --network host "${ENV[@]}" -e DJQA_PORT=8102 $IMG >/dev/null
for port in 8101 8102; do
  for _ in $(seq 300); do curl -sf http://127.0.0.1:$port/api/health >/dev/null && break; sleep 0.2; done
  echo "== replica $port health: $(curl -s http://127.0.0.1:$port/api/health)"
done
printf '发热门诊党员先锋岗实行二十四小时轮值，党员医生带头承担夜间接诊任务。' > "$SCRATCH/发热门诊.txt"
JOB=$(curl -s -H "X-API-Key: $KEY" -F "files=@$SCRATCH/发热门诊.txt" http://127.0.0.1:8101/api/documents | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
for _ in $(seq 600); do
  STATE=$(curl -s -H "X-API-Key: $KEY" http://127.0.0.1:8101/api/jobs/$JOB | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  [[ $STATE == done || $STATE == failed ]] && break; sleep 0.2
done
DONE=$(date +%s.%N)
echo "== upload through replica 8101: job $STATE"
[[ $STATE == done ]] || fail "the upload job did not finish"
Q='{"query": "发热门诊先锋岗轮值", "top_k": 1, "mode": "lexical"}'
top() { curl -s -X POST -H 'Content-Type: application/json' -d "$Q" http://127.0.0.1:$1/api/search | python3 -c 'import json,sys; r=json.load(sys.stdin).get("results") or [{}]; print(r[0].get("doc_id"))'; }
for _ in $(seq 100); do [[ $(top 8102) == 发热门诊 ]] && break; sleep 0.1; done
[[ $(top 8102) == 发热门诊 ]] || fail "replica 8102 does not find the document added through 8101"
echo "== replica 8102 finds it $(python3 -c "import time; print(round(time.time() - $DONE, 1))") s after the job was done"
kill "$(cat "$SCRATCH/milvus.pid")"; sleep 1
echo "== Milvus stopped: search $(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d "$Q" http://127.0.0.1:8102/api/search), health $(curl -s -o "$SCRATCH/health.json" -w '%{http_code}' http://127.0.0.1:8102/api/health) $(cat "$SCRATCH/health.json")"
[[ $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8101/api/health) == 503 ]] || fail "no 503 without the store"
start_milvus
for port in 8101 8102; do
  for _ in $(seq 150); do [[ $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$port/api/health) == 200 ]] && break; sleep 0.2; done
done
echo "== Milvus back: health $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8102/api/health) on 8102, $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8101/api/health) on 8101; top on 8101: $(top 8101)"
[[ $(top 8101) == 发热门诊 && $(top 8102) == 发热门诊 ]] || fail "the replicas did not recover"
echo "== ok"
