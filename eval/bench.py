"""Speed: `make bench` (python -m eval.bench) measures start-up, latency, throughput, memory and indexing.

Everything runs on this machine over loopback against `dangjian-qa serve` on a free port, started
and stopped here: on the FAISS store, on Milvus Lite (its gRPC server, and embedded), and optionally
an earlier commit's server. Benchmarks report; they never assert times. Writes eval/results/bench.json,
bench.md, bench_latency.png and bench_scale.png. `--quick` skips the scale runs (`dangjian-qa bench-scale`
at 10k, 100k and 1M passages, about 25 of its 35 minutes; service/scale.py).
"""

import argparse
import asyncio
import itertools
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx

from eval.bench_encoding import (
    encoder_runtimes,
    encoding_markdown,
    index_throughput,
    search_during_upload,
    txtai_peer,
    upload_document,
)
from eval.metrics import latency_summary
from eval.questions import load_questions
from service.config import PROJECT_ROOT, Settings
from service.scale import memory_mb

RESULTS_DIR = PROJECT_ROOT / "eval" / "results"
CLI = Path(sys.executable).parent / "dangjian-qa"
CONCURRENCY = (1, 4, 16, 64)
READY_TIMEOUT = 120.0
MAX_REQUESTS_PER_LEVEL = 50_000  # bounds a throughput level even if the server answers instantly


def machine() -> dict:
    """Cores, CPU model and RAM of this machine."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").is_file() else ""
    total = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.MULTILINE)
    return {
        "cores": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else platform.processor() or "unknown",
        "ram_bytes": int(total.group(1)) * 1024 if total else None,
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Server:
    """`dangjian-qa serve` in a subprocess on a free loopback port; a context manager.

    With `tree`, the server is that checkout's code (an earlier commit), run by this venv's Python.
    """

    def __init__(self, env: dict[str, str] | None = None, tree: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="djqa-bench-serve-", suffix=".log", delete=False)  # noqa: SIM115
        self.started = time.perf_counter()
        serve = ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
        command = [sys.executable, "-m", "service.cli", *serve] if tree else [str(CLI), *serve]
        env = {**os.environ, **(env or {}), **({"PYTHONPATH": str(tree)} if tree else {})}
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=tree or PROJECT_ROOT
        )

    def wait_until_answering(self, query: str) -> float:
        """Seconds from launch to the first answered /api/search."""
        deadline = self.started + READY_TIMEOUT
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while time.perf_counter() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}: {self.log_tail()}")
                try:
                    if client.post("/api/search", json={"query": query}).status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"server did not answer within {READY_TIMEOUT:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def cold_start(query: str, runs: int = 3) -> dict:
    """Launch-to-first-answer seconds of `dangjian-qa serve`, `runs` times."""
    seconds = []
    for _ in range(runs):
        with Server() as server:
            seconds.append(server.wait_until_answering(query))
    return {"runs": seconds, "median_seconds": statistics.median(seconds)}


def request_body(endpoint: str, question: str) -> dict:
    return {"query": question} if endpoint == "/api/search" else {"question": question}


def single_client(url: str, endpoint: str, questions: Sequence[str], requests: int) -> dict:
    """One client, one request at a time, questions cycled: latency percentiles and errors."""
    seconds, errors = [], 0
    with httpx.Client(base_url=url, timeout=60) as client:
        client.post(endpoint, json=request_body(endpoint, questions[0]))
        for question in itertools.islice(itertools.cycle(questions), requests):
            started = time.perf_counter()
            try:
                ok = client.post(endpoint, json=request_body(endpoint, question)).status_code == 200
            except httpx.HTTPError:
                ok = False
            seconds.append(time.perf_counter() - started)
            errors += not ok
    return {"requests": requests, "errors": errors, **latency_summary(seconds)}


async def load_level(url: str, endpoint: str, questions: Sequence[str], clients: int, duration: float) -> dict:
    """`clients` concurrent loops of requests for `duration` seconds: throughput, latency, errors."""
    deadline = time.perf_counter() + duration
    seconds: list[float] = []
    errors = 0
    counter = itertools.count()

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline and (number := next(counter)) < MAX_REQUESTS_PER_LEVEL:
            question = questions[number % len(questions)]
            started = time.perf_counter()
            try:
                response = await client.post(endpoint, json=request_body(endpoint, question))
                errors += response.status_code != 200
            except httpx.HTTPError:
                errors += 1
            seconds.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "seconds": elapsed,
        "requests": len(seconds),
        "errors": errors,
        "requests_per_second": (len(seconds) - errors) / elapsed,
        **latency_summary(seconds),
    }


def http_benchmarks(questions: Sequence[str], requests: int, duration: float) -> dict:
    """Single-client latency, throughput by concurrency and the server's peak RSS, on one server.

    The questions repeat across requests, so the server's query-vector cache is off for every number
    but `search_with_query_cache`, which shows what repeated questions cost.
    """
    results: dict = {}
    with Server(env={"DJQA_QUERY_CACHE_SIZE": "0"}) as server:
        server.wait_until_answering(questions[0])
        print(f"  server on {server.url}, pid {server.process.pid}", flush=True)
        results["search"] = single_client(server.url, "/api/search", questions, requests)
        print(f"  /api/search single client: {results['search']}", flush=True)
        results["ask"] = single_client(server.url, "/api/ask", questions, requests)
        print(f"  /api/ask single client: {results['ask']}", flush=True)
        results["throughput"] = []
        for clients in CONCURRENCY:
            level = asyncio.run(load_level(server.url, "/api/search", questions, clients, duration))
            results["throughput"].append(level)
            print(
                f"  {clients:>2} clients: {level['requests_per_second']:.1f} req/s, {level['errors']} errors",
                flush=True,
            )
        results["server_peak_rss_bytes"] = int(memory_mb("VmHWM", str(server.process.pid)) * 2**20)
    with Server() as server:
        server.wait_until_answering(questions[0])
        results["search_with_query_cache"] = single_client(server.url, "/api/search", questions, requests)
    return results


def upload_benchmark(questions: Sequence[str]) -> dict:
    """Search latency idle and while a server encodes an upload (ranks 101–110 of the collection, as one
    text file), on a copy of the seeds' index with an empty vector cache of its own."""
    key = "bench-key"
    with tempfile.TemporaryDirectory(prefix="djqa-bench-upload-") as scratch:
        settings = Settings()
        shutil.copytree(settings.index_dir, f"{scratch}/index", symlinks=True)
        shutil.copytree(settings.cache_dir, f"{scratch}/cache", ignore=shutil.ignore_patterns("vectors.sqlite*"))
        env = {
            "DJQA_QUERY_CACHE_SIZE": "0",
            "DJQA_API_KEY": key,
            "DJQA_INDEX_DIR": f"{scratch}/index",
            "DJQA_CACHE_DIR": f"{scratch}/cache",
            "DJQA_UPLOADS_DIR": f"{scratch}/uploads",
        }
        document = upload_document(Path(scratch), range(101, 111))
        with Server(env=env) as server:
            server.wait_until_answering(questions[0])
            return search_during_upload(server.url, key, questions, document)


def store_benchmark(env: dict[str, str], questions: Sequence[str], requests: int, duration: float) -> dict:
    """Single-client /api/search and /api/ask latency, 1- and 16-client throughput and peak RSS of one
    server with `env` (how the FAISS and Milvus stores compare, in the same run)."""
    with Server(env={"DJQA_QUERY_CACHE_SIZE": "0", **env}) as server:
        server.wait_until_answering(questions[0])
        search = single_client(server.url, "/api/search", questions, requests)
        ask = single_client(server.url, "/api/ask", questions, requests)
        levels = [asyncio.run(load_level(server.url, "/api/search", questions, n, duration)) for n in (1, 16)]
        rss = int(memory_mb("VmHWM", str(server.process.pid)) * 2**20)
    return {"search": search, "ask": ask, "throughput": levels, "server_peak_rss_bytes": rss}


def milvus_stores(questions: Sequence[str], requests: int, duration: float) -> dict:
    """The seeds' index copied into Milvus Lite (`dangjian-qa migrate`), served two ways: from Milvus
    Lite's gRPC server in its own process (as replicas share it), and embedded in the server (a .db path)."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="djqa-bench-milvus-", dir=PROJECT_ROOT / "data") as scratch:
        port = free_port()
        command = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", f"{scratch}/grpc", "--port", str(port)]
        store = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            uri = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while not listening(port) and time.monotonic() < deadline:
                time.sleep(0.2)
            env = {"DJQA_STORE": "milvus", "DJQA_MILVUS_URI": uri}
            subprocess.run([str(CLI), "migrate"], env={**os.environ, **env}, check=True, capture_output=True)
            results["grpc"] = store_benchmark(env, questions, requests, duration)
            results["grpc"]["store_peak_rss_bytes"] = int(memory_mb("VmHWM", str(store.pid)) * 2**20)
            print(f"  Milvus Lite gRPC server: {results['grpc']['search']}", flush=True)
        finally:
            store.terminate()
            store.wait()
        env = {"DJQA_STORE": "milvus", "DJQA_MILVUS_URI": f"{scratch}/embedded.db"}
        subprocess.run([str(CLI), "migrate"], env={**os.environ, **env}, check=True, capture_output=True)
        results["embedded"] = store_benchmark(env, questions, requests, duration)
        print(f"  Milvus Lite embedded: {results['embedded']['search']}", flush=True)
    return results


def previous_commit(revision: str, questions: Sequence[str], requests: int, duration: float) -> dict:
    """Single-client /api/search latency and 1- and 16-client throughput of an earlier commit's server,
    on its own index of the seeds, measured in this run so that the two are comparable."""
    with tempfile.TemporaryDirectory(prefix="djqa-bench-previous-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=PROJECT_ROOT, check=True)
        try:
            (tree / "models").symlink_to(PROJECT_ROOT / "models")
            env = {
                "DJQA_INDEX_DIR": str(Path(scratch) / "index"),
                "DJQA_UPLOADS_DIR": str(Path(scratch) / "uploads"),
                "DJQA_CACHE_DIR": str(Settings().cache_dir),
                "DJQA_QUERY_CACHE_SIZE": "0",
            }
            subprocess.run(
                [sys.executable, "-m", "service.cli", "index"],
                cwd=tree,
                env={**os.environ, **env, "PYTHONPATH": str(tree)},
                check=True,
                capture_output=True,
            )
            with Server(env=env, tree=tree) as server:
                server.wait_until_answering(questions[0])
                search = single_client(server.url, "/api/search", questions, requests)
                levels = [asyncio.run(load_level(server.url, "/api/search", questions, n, duration)) for n in (1, 16)]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=PROJECT_ROOT, check=False)
    return {"revision": revision, "search": search, "throughput": levels}


def index_build() -> dict:
    """`dangjian-qa index` on the seeds with a cold vector cache (ONNX export copied), then warm."""
    settings = Settings()
    onnx = settings.cache_dir / "onnx"
    with tempfile.TemporaryDirectory(prefix="djqa-bench-index-") as scratch:
        cache_dir, index_dir = Path(scratch) / "cache", Path(scratch) / "index"
        if onnx.is_dir():
            shutil.copytree(onnx, cache_dir / "onnx")
        # An empty uploads folder: `dangjian-qa index` also indexes users' uploaded originals.
        scratch_dirs = {"CACHE_DIR": cache_dir, "INDEX_DIR": index_dir, "UPLOADS_DIR": Path(scratch) / "uploads"}
        env = {**os.environ, **{f"DJQA_{name}": str(path) for name, path in scratch_dirs.items()}}
        runs = {}
        for label in ("cold", "warm"):
            started = time.perf_counter()
            done = subprocess.run(
                [str(CLI), "index"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
            )
            runs[label] = {"wall_seconds": time.perf_counter() - started}
            timing = re.search(r"用时 ([\d.]+) 秒（编码 ([\d.]+) 秒）", done.stdout)
            if timing:
                runs[label] |= {"build_seconds": float(timing.group(1)), "encode_seconds": float(timing.group(2))}
        version = (index_dir / "CURRENT").read_text().strip()
        manifest = json.loads((index_dir / "versions" / version / "manifest.json").read_text(encoding="utf-8"))
    passages, units = manifest["passage_count"], manifest["unit_count"]
    cold = runs["cold"]
    if cold.get("encode_seconds"):
        cold["passages_per_second"] = passages / cold["encode_seconds"]
        cold["units_per_second"] = units / cold["encode_seconds"]
    return {"passages": passages, "units": units, **runs}


def scale_run(count: int, clause_units: bool) -> dict:
    """`dangjian-qa bench-scale --passages COUNT --json` (it builds, then measures in a fresh process)."""
    env = {**os.environ, "DJQA_CLAUSE_UNITS": str(clause_units).lower()}
    with tempfile.TemporaryDirectory(prefix="djqa-bench-scale-", dir=PROJECT_ROOT / "data") as scratch:
        done = subprocess.run(
            [str(CLI), "bench-scale", "--passages", str(count), "--json", "--dir", scratch],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    from eval.report import bench_chart, bench_markdown, scale_chart

    parser = argparse.ArgumentParser(prog="python -m eval.bench", description="速度基准测试")
    parser.add_argument("--quick", action="store_true", help="跳过规模测试")
    parser.add_argument(
        "--scale",
        default="10000,100000",
        help="规模测试的合成段落数，逗号分隔（默认 10000,100000；按默认设置含分句单元）",
    )
    parser.add_argument(
        "--scale-without-clauses",
        default="100000,1000000",
        help="不含分句单元（DJQA_CLAUSE_UNITS=false）的规模测试段落数（默认 100000,1000000）",
    )
    parser.add_argument("--requests", type=int, default=500, help="单客户端请求数（默认 500）")
    parser.add_argument("--duration", type=float, default=5.0, help="每个并发级别的秒数（默认 5）")
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--compare", metavar="REV", help="同时测一个早先提交的服务（如 c645e5b），结果并列")
    parser.add_argument("--ranks", type=int, default=100, help="索引吞吐量所用的文档集排名范围（默认 1–100）")
    parser.add_argument("--slice-ranks", type=int, default=5, help="与早先提交对比索引吞吐量的排名范围（默认 1–5）")
    args = parser.parse_args(argv)

    questions = [q.question for q in load_questions()]
    results: dict = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    print("encoders …", flush=True)
    results["encoders"] = encoder_runtimes(questions)
    print("txtai hybrid, in process …", flush=True)
    results["txtai"] = txtai_peer(questions)
    print("cold start …", flush=True)
    results["cold_start"] = cold_start(questions[0], args.cold_starts)
    print("HTTP latency and throughput …", flush=True)
    results["http"] = http_benchmarks(questions, args.requests, args.duration)
    print("the same on Milvus Lite …", flush=True)
    results["milvus"] = milvus_stores(questions, args.requests, args.duration)
    if args.compare:
        print(f"the same against {args.compare} …", flush=True)
        results["previous"] = previous_commit(args.compare, questions, args.requests, args.duration)
    print("search during an upload …", flush=True)
    results["upload"] = upload_benchmark(questions)
    print("index build …", flush=True)
    results["index_build"] = index_build()
    print("indexing the collection …", flush=True)
    results["collection_build"] = index_throughput(args.ranks, args.compare, args.slice_ranks)
    if not args.quick:
        runs = [(int(size), True) for size in args.scale.split(",") if size]
        runs += [(int(size), False) for size in args.scale_without_clauses.split(",") if size]
        results["scale"] = []
        for count, clause_units in runs:
            print(f"scale run with {count:,} synthetic passages, clause units {clause_units} …", flush=True)
            results["scale"].append(scale_run(count, clause_units))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
    report = bench_markdown(results) + "\n" + "\n\n".join(encoding_markdown(results)) + "\n"
    (args.out / "bench.md").write_text(report)
    bench_chart(results, args.out / "bench_latency.png")
    if results.get("scale"):
        scale_chart(results["scale"], args.out / "bench_scale.png")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
