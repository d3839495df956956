"""Users' files are parsed in a child process with CPU-time, wall-time and memory limits."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service.config import PROJECT_ROOT, Settings
from service.engine import ingest_limits, parse_limits
from service.ingest import Limits, ParseLimitExceeded, ParsesStopped, ProcessLimits, ReadError, ingest_file
from service.ingest.isolate import POOL, ParsePool, run_limited
from service.ingest.read import OverLimit, UnsupportedFileType
from tests.make_documents import make_shared_stream_pdf

UNLIMITED_CONTENT = Limits(pdf_pages=2_000)  # only the process limits stand between the file and the hours
GENEROUS = ProcessLimits(cpu_seconds=60, wall_seconds=60, memory_bytes=2**30)


@pytest.fixture(scope="module")
def hostile_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """806 KB in the wild: 2,000 pages sharing one 5 MB stream of text operators that draw nothing."""
    return make_shared_stream_pdf(tmp_path_factory.mktemp("pdf") / "shared.pdf", 2_000, stream_megabytes=5)


PEAK_OF_ONE_PARSE = """
import resource, sys
from pathlib import Path
from service.config import PROJECT_ROOT, Settings
from service.engine import ingest_limits, parse_limits
from service.ingest import OverLimit, ingest_file
try:
    ingest_file(Path(sys.argv[1]), limits=ingest_limits(Settings()), process=parse_limits(Settings()))
except OverLimit as error:
    print(error)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_hostile_pdf_is_refused_quickly_by_a_small_child(hostile_pdf: Path) -> None:
    settings = Settings()
    cpu_before, started = time.process_time(), time.monotonic()
    with pytest.raises(OverLimit, match=r"shared\.pdf.*DJQA_MAX_PDF_PAGE_BYTES"):
        ingest_file(hostile_pdf, limits=ingest_limits(settings), process=parse_limits(settings))
    assert time.monotonic() - started < 15.0
    assert time.process_time() - cpu_before < 1.0, "the parse ran in the child, not here"
    # The child's peak, measured in a fresh process whose only child it is (RUSAGE_CHILDREN keeps the max).
    command = [sys.executable, "-c", PEAK_OF_ONE_PARSE, str(hostile_pdf)]
    output = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60).stdout.split("\n")
    assert "DJQA_MAX_PDF_PAGE_BYTES" in output[0]
    assert int(output[1]) < 256 * 1024, "the child stayed under 256 MB (ru_maxrss in KB)"


def test_parse_over_its_cpu_time_is_stopped(hostile_pdf: Path) -> None:
    limits = ProcessLimits(cpu_seconds=2, wall_seconds=60, memory_bytes=2**30)
    started = time.monotonic()
    with pytest.raises(ParseLimitExceeded, match=r"shared\.pdf.*2 秒 CPU 时间的上限.*DJQA_PARSE_CPU_SECONDS"):
        ingest_file(hostile_pdf, limits=UNLIMITED_CONTENT, process=limits)
    assert time.monotonic() - started < 30.0  # 2 s of CPU at a low priority on a busy machine
    assert not POOL.children


def test_parse_over_its_wall_time_is_killed(hostile_pdf: Path) -> None:
    limits = ProcessLimits(cpu_seconds=60, wall_seconds=1.5, memory_bytes=2**30)
    started = time.monotonic()
    with pytest.raises(ParseLimitExceeded, match=r"shared\.pdf.*1\.5 秒的时限.*DJQA_PARSE_WALL_SECONDS"):
        ingest_file(hostile_pdf, limits=UNLIMITED_CONTENT, process=limits)
    assert time.monotonic() - started < 5.0
    assert not POOL.children


def test_parse_over_its_memory_is_refused_with_the_limit_named(hostile_pdf: Path) -> None:
    """pypdf keeps every operator of the 5 MB stream as objects: about 400 MB for one page."""
    limits = ProcessLimits(cpu_seconds=60, wall_seconds=60, memory_bytes=192 * 2**20)
    with pytest.raises(ParseLimitExceeded, match=r"shared\.pdf.*192 MB 的上限.*DJQA_PARSE_MEMORY_BYTES"):
        ingest_file(hostile_pdf, limits=UNLIMITED_CONTENT, process=limits)


def test_child_reads_a_file_as_this_process_does(tmp_path: Path) -> None:
    seed = sorted(Settings().seeds_dir.glob("*.txt"))[0]
    assert ingest_file(seed, name="讲话.txt", process=GENEROUS) == ingest_file(seed, name="讲话.txt")


def test_a_files_own_errors_come_back_as_they_are(tmp_path: Path) -> None:
    empty, unsupported = tmp_path / "空.txt", tmp_path / "表格.xls"
    empty.write_bytes(b"")
    unsupported.write_bytes(b"x")
    with pytest.raises(ReadError, match=r"空\.txt：文件是空的"):
        ingest_file(empty, process=GENEROUS)
    with pytest.raises(UnsupportedFileType, match=r"不支持的文件类型 \.xls"):
        ingest_file(unsupported, process=GENEROUS)


def test_at_most_parallel_parses_run_at_once(hostile_pdf: Path) -> None:
    settings = Settings()
    limits, process = ingest_limits(settings), parse_limits(settings)
    assert process.parallel == 1
    most, done = 0, threading.Event()

    def parse() -> None:
        with pytest.raises(OverLimit):
            ingest_file(hostile_pdf, limits=limits, process=process)

    def watch() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, len(POOL.children))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    parsers = [threading.Thread(target=parse) for _ in range(3)]
    for thread in parsers:
        thread.start()
    for thread in parsers:
        thread.join(timeout=60)
    done.set()
    watcher.join()
    assert most == 1


def test_stopping_the_pool_kills_its_parses(hostile_pdf: Path, tmp_path: Path) -> None:
    pool = ParsePool()
    outcome: list[BaseException] = []

    def parse() -> None:
        try:
            run_limited(ingest_file, (hostile_pdf, None, None, UNLIMITED_CONTENT), GENEROUS, "shared.pdf", pool)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=parse)
    thread.start()
    deadline = time.monotonic() + 10
    while not pool.children and time.monotonic() < deadline:
        time.sleep(0.01)
    (child,) = pool.children
    time.sleep(0.5)  # into the extraction
    started = time.monotonic()
    pool.stop()
    thread.join(timeout=10)
    assert time.monotonic() - started < 2.0
    assert isinstance(outcome[0], ParsesStopped)
    assert child.poll() is not None
    seed = sorted(Settings().seeds_dir.glob("*.txt"))[0]
    assert run_limited(ingest_file, (seed,), GENEROUS, seed.name, pool), "the next parse runs as usual"
