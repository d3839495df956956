"""A small PDF that costs hours of parsing, sent to a real server, a job and the CLI: refused quickly,
searches stay fast meanwhile, the server is idle again soon after and stops promptly on SIGTERM."""

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.embed import Encoders
from service.jobs import FAILED_STATE, JobStore, JobWorker, UploadChecks, UploadsBusy
from service.live import LiveIndex
from service.tokenize import WordTokenizer
from tests.conftest import run_cli, start_server, stop_server
from tests.make_documents import make_shared_stream_pdf

KEY = "heavy-uploads-key"
WRITE = {"X-API-Key": KEY}
QUESTIONS = ["如何推动党建与医疗业务深度融合", "三会一课", "党风廉政建设", "支部书记的职责", "志愿服务进社区"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def hostile_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 pages sharing one 5 MB stream of text operators that draw nothing: under 1 MB, hours to parse."""
    return make_shared_stream_pdf(tmp_path_factory.mktemp("pdf") / "shared.pdf", 2_000, stream_megabytes=5)


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its children: the ones it has waited for (utime, stime, cutime,
    cstime) and the ones still running (its parses)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0  # a child that ended meanwhile: its time is in its parent's cutime now
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS + sum(map(cpu_seconds, child_pids(pid)))


def child_pids(pid: int) -> list[int]:
    """The processes `pid` started (its parse children), from every thread's /proc children list."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return [int(child) for task in tasks for child in (task / "children").read_text().split()]
    except FileNotFoundError:
        return []


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def seconds_until_idle(pid: int, within: float) -> float:
    """How long until the process uses under 5% of a core over two seconds; fails after `within`."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        before = cpu_seconds(pid)
        time.sleep(2)
        if cpu_seconds(pid) - before < 0.1:
            return time.monotonic() - started
    raise AssertionError(f"the server still burns CPU {within:.0f} s after the last upload")


def search_times(http: httpx.Client, count: int | None = None, until: threading.Event | None = None) -> list[float]:
    """Seconds each search took: `count` of them, or as many as run until `until` is set."""
    times: list[float] = []
    while (count is not None and len(times) < count) or (until is not None and not until.is_set()):
        started = time.perf_counter()
        response = http.post("/api/search", json={"query": QUESTIONS[len(times) % len(QUESTIONS)], "top_k": 5})
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return times


def p95(times: list[float]) -> float:
    return float(np.percentile(times, 95, method="inverted_cdf"))


def test_hostile_pdfs_are_refused_while_searches_stay_fast_and_the_server_goes_idle(
    private_settings: Settings, hostile_pdf: Path, tmp_path: Path
) -> None:
    url, server = start_server(private_settings, tmp_path / "server.log", DJQA_API_KEY=KEY, DJQA_QUERY_CACHE_SIZE="0")
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            search_times(http, count=10)  # warm
            idle = search_times(http, count=60)
            answers: list[tuple[float, httpx.Response]] = []
            uploads_done = threading.Event()

            def upload() -> None:
                started = time.monotonic()
                files = {"files": ("shared.pdf", hostile_pdf.read_bytes(), "application/pdf")}
                response = httpx.post(f"{url}/api/documents", files=files, headers=WRITE, timeout=120)
                answers.append((time.monotonic() - started, response))

            def upload_three_at_once() -> None:
                uploaders = [threading.Thread(target=upload) for _ in range(3)]
                for thread in uploaders:
                    thread.start()
                for thread in uploaders:
                    thread.join()
                uploads_done.set()

            threading.Thread(target=upload_three_at_once).start()
            during = search_times(http, until=uploads_done)
        last_upload = time.monotonic()
        assert len(answers) == 3
        for seconds, response in answers:
            assert response.status_code == 413, response.text
            error = response.json()["error"]
            assert error["code"] == "document_too_large"
            assert "shared.pdf" in error["message"] and "DJQA_MAX_PDF_PAGE_BYTES" in error["message"]
            assert seconds < 60
        print(f"uploads answered in {', '.join(f'{seconds:.1f}' for seconds, _ in answers)} s")
        print(f"search p95 idle {p95(idle) * 1000:.0f} ms, during {p95(during) * 1000:.0f} ms ({len(during)} searches)")
        assert len(during) >= 20
        assert p95(during) <= 3 * p95(idle)
        idle_after = seconds_until_idle(server.pid, within=120)
        print(f"server idle {time.monotonic() - last_upload:.1f} s after the last answer (measured {idle_after:.1f} s)")
        assert not child_pids(server.pid), "no parse is left running"
    finally:
        stop_server(server)


def test_sigterm_stops_the_server_promptly_while_a_parse_burns(
    private_settings: Settings, hostile_pdf: Path, tmp_path: Path
) -> None:
    """Content budgets off: only the process limits (10 minutes here) would end the parse."""
    unlimited = {"DJQA_MAX_PDF_PAGE_BYTES": str(2**40), "DJQA_MAX_PDF_CONTENT_BYTES": str(2**40)}
    slow = {"DJQA_PARSE_CPU_SECONDS": "600", "DJQA_PARSE_WALL_SECONDS": "600"}
    url, server = start_server(private_settings, tmp_path / "server.log", DJQA_API_KEY=KEY, **unlimited, **slow)
    try:
        files = {"files": ("shared.pdf", hostile_pdf.read_bytes(), "application/pdf")}
        upload = threading.Thread(
            target=lambda: httpx.post(f"{url}/api/documents", files=files, headers=WRITE, timeout=120), daemon=True
        )
        upload.start()
        deadline = time.monotonic() + 30
        while not (parses := child_pids(server.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert parses, "the upload is being parsed in a child process"
        time.sleep(1)  # well into the extraction
        assert httpx.get(f"{url}/api/health", timeout=10).status_code == 200
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM")
        assert time.monotonic() - started < 15
        time.sleep(0.5)
        assert not any(running(pid) for pid in parses), "the parse ended with the server"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_upload_job_whose_parse_is_over_a_limit_fails_with_the_reason(
    private_settings: Settings, encoders: Encoders, tokenizer: WordTokenizer, hostile_pdf: Path
) -> None:
    store = JobStore(private_settings.jobs_path)
    folder = store.receiving_folder()
    (folder / "upload-0").write_bytes(hostile_pdf.read_bytes())
    job = store.create(folder, [{"name": "shared.pdf", "path": "upload-0"}], {})
    started = time.monotonic()
    JobWorker(store, LiveIndex(private_settings, encoders, tokenizer)).run(job)
    assert time.monotonic() - started < 30
    job = store.load(job.job_id)
    assert job is not None and job.state == FAILED_STATE and job.status == 413
    assert job.error is not None and job.error["code"] == "document_too_large"
    assert "DJQA_MAX_PDF_PAGE_BYTES" in job.error["message"]


def test_cli_add_refuses_the_hostile_pdf(private_settings: Settings, hostile_pdf: Path) -> None:
    started = time.monotonic()
    result = run_cli(private_settings, "add", str(hostile_pdf))
    assert result.returncode == 4, result.stderr
    assert "shared.pdf" in result.stderr and "DJQA_MAX_PDF_PAGE_BYTES" in result.stderr
    assert time.monotonic() - started < 120  # most of it loading the models


def test_cli_add_is_held_to_the_parse_cpu_limit(private_settings: Settings, hostile_pdf: Path) -> None:
    unlimited = {"DJQA_MAX_PDF_PAGE_BYTES": str(2**40), "DJQA_MAX_PDF_CONTENT_BYTES": str(2**40)}
    result = run_cli(private_settings, "add", str(hostile_pdf), DJQA_PARSE_CPU_SECONDS="3", **unlimited)
    assert result.returncode == 4, result.stderr
    assert "DJQA_PARSE_CPU_SECONDS" in result.stderr


def test_uploads_beyond_the_waiting_room_are_refused_at_once() -> None:
    """One check runs, one waits, the third is refused (503 uploads_busy) instead of piling up."""
    checks = UploadChecks(parallel=1, waiting=1)
    release = threading.Event()

    async def three_uploads() -> None:
        first = asyncio.ensure_future(checks.run(release.wait))
        second = asyncio.ensure_future(checks.run(release.wait))
        await asyncio.sleep(0.05)
        with pytest.raises(UploadsBusy, match="请稍后重试"):
            await checks.run(release.wait)
        release.set()
        assert await asyncio.gather(first, second) == [True, True]
        assert await checks.run(lambda: "next") == "next", "a slot is free again"

    try:
        asyncio.run(three_uploads())
    finally:
        release.set()
        checks.stop()


def test_files_of_an_upload_whose_client_has_gone_are_not_parsed(
    private_settings: Settings, hostile_pdf: Path, tmp_path: Path
) -> None:
    """Five files that each take a parse's whole wall time: after the client hangs up, at most the
    file being parsed finishes; the rest are never read."""
    unlimited = {"DJQA_MAX_PDF_PAGE_BYTES": str(2**40), "DJQA_MAX_PDF_CONTENT_BYTES": str(2**40)}
    env = {"DJQA_API_KEY": KEY, "DJQA_PARSE_WALL_SECONDS": "10", **unlimited}
    url, server = start_server(private_settings, tmp_path / "server.log", **env)
    try:
        files = [("files", (f"shared-{n}.pdf", hostile_pdf.read_bytes(), "application/pdf")) for n in range(5)]
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/api/documents", files=files, headers=WRITE, timeout=3)
        gone = time.monotonic()
        idle_after = seconds_until_idle(server.pid, within=60)
        print(f"server idle {time.monotonic() - gone:.1f} s after the client hung up (measured {idle_after:.1f} s)")
        assert time.monotonic() - gone < 30, "one file's wall time (10 s), not five"
        assert not child_pids(server.pid)
    finally:
        stop_server(server)
