"""Upload jobs on a real server: kill -9 during a job or an upload, restarts, bombs under a memory watchdog."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from service.config import Settings
from service.embed import Encoders
from service.engine import load_current
from service.jobs import DONE, RUNNING, Job, JobStore, JobWorker
from service.live import LiveIndex
from service.originals import original_files
from service.tokenize import WordTokenizer
from service.update import AddReport, add_files
from tests.conftest import start_server, stop_server
from tests.make_documents import make_blank_pdf, make_docx_bomb

T = TypeVar("T")
KEY = "jobs-test-key"
WRITE = {"X-API-Key": KEY}
WORDS = list("党支部党员医院患者门诊护理科室服务制度学习教育廉洁医德质量安全群众志愿社区健康培训")


@pytest.fixture
def settings(tmp_path: Path, seed_settings: Settings) -> Settings:
    """A private copy of the seed index with an empty vector cache, so that a job really encodes."""
    shutil.copytree(seed_settings.index_dir, tmp_path / "index")
    cache = tmp_path / "cache"
    cache.mkdir()
    for shared in ("onnx", "jieba"):  # the exported model and dictionary, not the vectors
        if (seed_settings.cache_dir / shared).is_dir():
            (cache / shared).symlink_to(seed_settings.cache_dir / shared)
    update = {"index_dir": tmp_path / "index", "uploads_dir": tmp_path / "uploads", "cache_dir": cache}
    return seed_settings.model_copy(update=update)


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    url, process = start_server(settings, tmp_path / "server.log", DJQA_API_KEY=KEY)
    try:
        yield url, process
    finally:
        stop_server(process)


def distinct_document(paragraphs: int) -> str:
    """Paragraphs no cache has seen (a random mark in each), so every one is encoded."""
    mark = uuid.uuid4().hex[:8]
    lines = []
    for number in range(paragraphs):
        words = [WORDS[(number * 7 + step * 3) % len(WORDS)] for step in range(12)]
        lines.append(f"{''.join(words[:6])}第{number}项{mark}，{''.join(words[6:])}落实到位。")
    return "\n".join(lines) + "\n"


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def wait_for(url: str, job_id: str, states: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/api/jobs/{job_id}", headers=WRITE).json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def test_job_killed_while_indexing_is_resumed_after_a_restart(
    settings: Settings, server: tuple[str, subprocess.Popen[bytes]], tmp_path: Path, encoders: Encoders
) -> None:
    url, process = server
    response = httpx.post(
        f"{url}/api/documents", files={"files": ("病历质控.txt", distinct_document(300))}, headers=WRITE, timeout=60
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    running = wait_for(url, job_id, ("running",))
    while running["passages_done"] == 0:
        running = httpx.get(f"{url}/api/jobs/{job_id}", headers=WRITE).json()
        assert running["state"] == "running", running
        time.sleep(0.05)
    kill(process)
    assert "病历质控" not in load_current(settings, encoders).documents, "nothing of the job is live yet"

    url, process = start_server(settings, tmp_path / "server.log", DJQA_API_KEY=KEY)
    try:
        job = wait_for(url, job_id, ("done", "failed"), timeout=180)
    finally:
        stop_server(process)
    assert job["state"] == "done" and job["status"] == 201, job
    assert [d["doc_id"] for d in job["result"]["added"]] == ["病历质控"]
    index = load_current(settings, encoders)
    assert sum(1 for p in index.passages if p.doc_id == "病历质控") == job["result"]["added"][0]["passages"] == 300
    assert original_files(settings.uploads_dir) == [settings.uploads_dir / "病历质控.txt"]
    assert not list(settings.jobs_path.glob(f"{job_id}/upload-*")), "a finished job's files are deleted"


def test_upload_folder_of_a_killed_server_is_removed_at_start(
    settings: Settings, server: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url, process = server
    sent = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b'--B\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\n'
        yield "党支部开展主题党日活动。\n".encode() * 1000
        sent.set()
        time.sleep(30)  # the server is killed meanwhile
        yield b"\r\n--B--\r\n"

    def upload() -> None:
        headers = {**WRITE, "content-type": "multipart/form-data; boundary=B"}
        with contextlib.suppress(httpx.HTTPError):  # the server dies while receiving it
            httpx.post(f"{url}/api/documents", content=slow_body(), headers=headers, timeout=60)

    client = threading.Thread(target=upload, daemon=True)
    client.start()
    sent.wait(timeout=30)
    deadline = time.monotonic() + 10
    while not list(settings.jobs_path.glob(".receiving-*/upload-0")) and time.monotonic() < deadline:
        time.sleep(0.05)
    receiving = list(settings.jobs_path.glob(".receiving-*"))
    assert receiving and receiving[0].parent == settings.jobs_path, "uploads are received under the data directory"
    kill(process)
    assert receiving[0].exists(), "a killed server cannot clean up after itself"

    url, process = start_server(settings, tmp_path / "server.log", DJQA_API_KEY=KEY)
    stop_server(process)
    assert not list(settings.jobs_path.glob(".receiving-*")), "the next start removes it"


def peak_rss_while(process: subprocess.Popen[bytes], request: Callable[[], T]) -> tuple[T, int, int]:
    """Run `request` while sampling the server's resident memory from /proc; (result, before, peak) in MB."""

    def rss() -> int:
        status = Path(f"/proc/{process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) // 1024

    before = rss()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = request()
    finally:
        done.set()
        sampler.join()
    return result, before, peak[0]


def test_bombs_are_refused_with_bounded_memory_and_time(
    server: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url, process = server
    bomb = make_docx_bomb(tmp_path / "炸弹.docx", xml_megabytes=1100)  # 3.4 MB holding 1.1 GB of XML
    text_bomb = make_docx_bomb(tmp_path / "长文.docx", xml_megabytes=30)  # within the unpacked limit: 1.4M characters
    pages = make_blank_pdf(tmp_path / "空白.pdf", 32_768)
    for path, limit in (
        (bomb, "DJQA_MAX_UNPACKED_BYTES"),
        (text_bomb, "DJQA_MAX_DOCUMENT_CHARS"),
        (pages, "DJQA_MAX_PDF_PAGES"),
    ):
        started = time.monotonic()
        response, before, peak = peak_rss_while(
            process,
            lambda path=path: httpx.post(
                f"{url}/api/documents", files={"files": (path.name, path.read_bytes())}, headers=WRITE, timeout=60
            ),
        )
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "document_too_large" and limit in response.json()["error"]["message"]
        assert time.monotonic() - started < 10, f"{path.name} took {time.monotonic() - started:.1f}s"
        assert peak - before < 150, f"{path.name}: server memory {before} MB -> {peak} MB"
    assert httpx.get(f"{url}/api/health").json()["documents"] == 5


def test_job_whose_version_went_live_before_the_kill_is_done_at_restart(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    """Killed after the switch, before the job said so: the manifest's applied_jobs tells, the result is kept."""
    store = JobStore(settings.jobs_path)
    folder = store.receiving_folder()
    (folder / "upload-0").write_text("口腔科党支部组建“微笑护齿”服务队。\n", encoding="utf-8")
    job = store.create(folder, [{"name": "护齿.txt", "path": "upload-0"}], {"skipped": [], "failed": []})
    files = [("护齿.txt", settings.jobs_path / job.job_id / "upload-0")]
    live = LiveIndex(settings, encoders, tokenizer)
    worker = JobWorker(store, live)

    def killed_after_commit(report: AddReport) -> None:
        worker.commit(job, report)  # state running, result written, CURRENT not yet switched

    job.state = RUNNING
    add_files(settings, encoders, tokenizer, files, job_id=job.job_id, before_save=killed_after_commit)
    assert JobStore(settings.jobs_path).load(job.job_id).state == RUNNING  # as a killed server left it

    restarted = JobWorker(JobStore(settings.jobs_path), LiveIndex(settings, encoders, tokenizer))
    restarted.start()
    try:
        recovered = restarted.store.load(job.job_id)
    finally:
        restarted.stop()
    assert recovered.state == "done" and recovered.status == 201, recovered
    assert recovered.result["added"][0]["doc_id"] == "护齿"
    assert not (settings.jobs_path / job.job_id / "upload-0").exists()
    assert sum(1 for p in load_current(settings, encoders).passages if p.doc_id == "护齿") == 1, "applied once"


def queued_job(store: JobStore, name: str, text: str) -> Job:
    """A job as an accepted upload leaves it: its file received, job.json written, state queued."""
    folder = store.receiving_folder()
    (folder / "upload-0").write_text(text, encoding="utf-8")
    return store.create(folder, [{"name": name, "path": "upload-0"}], {"skipped": [], "failed": []})


def on_disk(settings: Settings, job: Job) -> dict:
    return json.loads((settings.jobs_path / job.job_id / "job.json").read_text(encoding="utf-8"))


def test_progress_is_kept_in_memory_and_only_state_changes_are_synced_to_disk(
    settings: Settings, encoders: Encoders, tokenizer: WordTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(settings.jobs_path)
    job = queued_job(store, "护齿.txt", "口腔科党支部组建“微笑护齿”服务队。\n")
    worker = JobWorker(store, LiveIndex(settings, encoders, tokenizer))
    synced: list[int] = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda descriptor: (synced.append(descriptor), fsync(descriptor))[1])

    job.state = RUNNING
    report = worker.progress(job)
    for done in range(0, 101, 10):
        report(done, 100)
    assert synced == [], "progress is not durable state: no write, no fsync"
    assert store.load(job.job_id).passages_done == 100, "GET /api/jobs/{id} sees it"
    assert on_disk(settings, job)["passages_done"] == 0

    worker.finish(job, DONE)
    assert synced, "a state change is written crash-safe"
    assert on_disk(settings, job)["state"] == DONE


def test_worker_takes_jobs_from_its_queue_without_reading_job_files(
    settings: Settings, encoders: Encoders, tokenizer: WordTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs queued on disk at start (left by a stopped server) and jobs submitted later run in order."""
    left = queued_job(JobStore(settings.jobs_path), "义诊.txt", "门诊党支部每月开展一次社区义诊活动。\n")
    worker = JobWorker(JobStore(settings.jobs_path), LiveIndex(settings, encoders, tokenizer))
    worker.start()
    reads: list[str] = []
    monkeypatch.setattr(worker.store, "jobs", lambda: reads.append("jobs") or [])
    monkeypatch.setattr(worker.store, "load", lambda job_id: reads.append(job_id))
    try:
        submitted = queued_job(JobStore(settings.jobs_path), "护理.txt", "护理部党总支开展“星级护士”评选活动。\n")
        worker.submit(submitted)
        deadline = time.monotonic() + 120
        while any(on_disk(settings, job)["state"] != DONE for job in (left, submitted)):
            assert time.monotonic() < deadline, [on_disk(settings, job) for job in (left, submitted)]
            time.sleep(0.05)
    finally:
        worker.stop()
    assert reads == [], "the worker picks the next job from memory, not by reading every job.json"
    assert on_disk(settings, left)["started_at"] <= on_disk(settings, submitted)["started_at"]
    assert {"义诊", "护理"} <= load_current(settings, encoders).documents.keys()
