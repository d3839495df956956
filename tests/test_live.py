"""The live index under churn: searches keep answering while versions come and go, and a version's
files are closed once no request uses it."""

import logging
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import service.live as live_module
from service.config import Settings
from service.embed import Encoders
from service.live import LiveIndex
from service.tokenize import WordTokenizer
from tests.conftest import start_server, stop_server

KEY = "live-test-key"
WRITE = {"X-API-Key": KEY}
QUESTIONS = ["如何推动党建与医疗业务深度融合", "三会一课", "党风廉政建设", "医德医风", "支部书记", "志愿服务"]
# A long situation description takes e5 tens of milliseconds to encode, so with 16 clients a request
# lives long enough to see the index change twice under it (each one a new text: no query cache).
SITUATION = "我们医院党支部最近在讨论怎样把党建工作和科室的医疗业务结合起来，书记说要搞党员先锋岗，"
CLIENTS = 16
DOCUMENTS = 8


def question(turn: int) -> str:
    if turn % 3:
        return QUESTIONS[turn % len(QUESTIONS)]
    return SITUATION * 4 + f"第{turn}次请问具体应该怎么做？"


def document_text(number: int) -> bytes:
    """A small document of its own (distinct text, so each upload is a new document)."""
    return (
        f"一、第{number}党支部工作\n第{number}党支部组建党员先锋岗，在门诊大厅开展志愿服务，方便群众就医。\n"
        f"二、廉洁从医\n第{number}党支部开展医德医风教育，每季度召开一次警示教育会。\n"
    ).encode()


@pytest.fixture
def server(tmp_path: Path, seed_settings: Settings) -> Iterator[tuple[str, int]]:
    """A real `dangjian-qa serve` on a copy of the seed index, writes enabled; its URL and process id."""
    shutil.copytree(seed_settings.index_dir, tmp_path / "index")
    settings = seed_settings.model_copy(update={"index_dir": tmp_path / "index", "uploads_dir": tmp_path / "uploads"})
    url, process = start_server(settings, tmp_path / "server.log", DJQA_API_KEY=KEY)
    try:
        yield url, process.pid
    finally:
        stop_server(process)


def wait_for_job(http: httpx.Client, location: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = http.get(location, headers=WRITE).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {location} not done in 120 s")


def open_passage_tables(pid: int) -> list[str]:
    """The passages.sqlite files the server process holds open (deleted ones end in ' (deleted)')."""
    folder = Path(f"/proc/{pid}/fd")
    targets = []
    for entry in folder.iterdir():
        try:
            target = os.readlink(entry)
        except OSError:  # closed meanwhile
            continue
        if "passages.sqlite" in target:
            targets.append(target)
    return targets


def test_searches_never_fail_while_documents_are_added_and_deleted_back_to_back(server: tuple[str, int]) -> None:
    url, pid = server
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def search_until_stopped(number: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            turn = number
            while not stop.is_set():
                turn += 1
                body = {"query": question(turn), "top_k": 10, "mode": ("hybrid", "lexical")[turn % 2]}
                try:
                    outcome = str(http.post("/api/search", json=body).status_code)
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                with lock:
                    outcomes[outcome] += 1

    clients = [threading.Thread(target=search_until_stopped, args=(n,)) for n in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            locations = []
            for number in range(DOCUMENTS):
                files = {"files": (f"支部材料{number}.txt", document_text(number))}
                response = http.post("/api/documents", files=files, headers=WRITE)
                assert response.status_code == 202, response.text
                locations.append(response.headers["location"])
            jobs = [wait_for_job(http, location) for location in locations]
            assert [job["status"] for job in jobs] == [201] * DOCUMENTS, jobs
            for number in range(DOCUMENTS):  # back to back: each delete serves a new version
                response = http.delete(f"/api/documents/支部材料{number}", headers=WRITE)
                assert response.status_code == 200, response.text
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=90)
    assert outcomes["200"] >= 50, outcomes
    assert set(outcomes) == {"200"}, f"searches that failed while the index changed: {outcomes}"
    # Every request has finished: only the live version's passage table may still be open.
    time.sleep(1.5)
    held = open_passage_tables(pid)
    with httpx.Client(base_url=url) as http:
        live_version = http.get("/api/health").json()["index_version"]
    assert held and all(f"/{live_version}/" in target for target in held), held


def test_the_watcher_loads_new_versions_and_retries_a_broken_one_with_backoff(
    private_settings: Settings,
    encoders: Encoders,
    tokenizer: WordTokenizer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("service.live.RELOAD_CHECK_SECONDS", 0.02)
    loads: list[str] = []  # the thread each version load ran in
    real_open_searcher = live_module.open_searcher

    def counted(*args: object) -> object:
        loads.append(threading.current_thread().name)
        return real_open_searcher(*args)

    monkeypatch.setattr(live_module, "open_searcher", counted)
    live = LiveIndex(private_settings, encoders, tokenizer)
    served = live.current()
    versions = private_settings.index_dir / "versions"
    broken = versions / "20000101T000000-broken"
    shutil.copytree(versions / served.version, broken)
    (broken / "documents.jsonl").write_text("", encoding="utf-8")
    (private_settings.index_dir / "CURRENT").write_text(f"{broken.name}\n")
    live.start()
    try:
        with caplog.at_level(logging.WARNING, logger="dangjian_qa"):
            for _ in range(30):  # 1.5 s of requests: none of them loads, the broken version stays unserved
                with live.lease() as snapshot:
                    assert snapshot is served
                time.sleep(0.05)
        warnings = [record for record in caplog.records if "新索引无法加载" in record.getMessage()]
        assert len(warnings) == 1, "logged once"
        assert loads == ["MainThread", "index-watcher"], f"tried once, the next try 2 s later: {loads}"
        repaired = versions / "20000101T000001-repaired"
        shutil.copytree(versions / served.version, repaired)
        (private_settings.index_dir / "CURRENT").write_text(f"{repaired.name}\n")
        deadline = time.monotonic() + 20
        while live.current().version != repaired.name:
            assert time.monotonic() < deadline, "the repaired version was not served"
            time.sleep(0.05)
        assert set(loads[1:]) == {"index-watcher"}, "requests never pay for a load"
        assert served.closed, "the old snapshot's files are closed, no request holding it"
    finally:
        live.close()
