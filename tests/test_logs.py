"""Log lines of a real server: a request id in and out, access lines without questions or keys, version
switches, upload jobs, /api/ask refusals and generation fallbacks; plain text or JSON lines."""

import json
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from service.config import Settings
from tests.conftest import live_server, run_cli, write

KEY = "log-key-91c2e7"
SECRET_QUESTION = "夜班值守党员责任区划分办法"  # no seed contains it: found in a log only if a question was logged
OFF_TOPIC = "红烧肉怎么做才好吃"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, seed_settings: Settings) -> Settings:
    """A private copy of the seed index: the tests add documents to it."""
    folder = tmp_path_factory.mktemp("logs")
    shutil.copytree(seed_settings.index_dir, folder / "index")
    return seed_settings.model_copy(update={"index_dir": folder / "index", "uploads_dir": folder / "uploads"})


@pytest.fixture(scope="module")
def text_server(settings: Settings) -> Iterator[tuple[str, Path]]:
    """A server with the default logs (plain text, no questions) and an API key; its URL and log file."""
    log = settings.index_dir.parent / "text.log"
    with live_server(settings, log, DJQA_API_KEY=KEY) as url:
        yield url, log


def call(
    url: str, path: str, body: dict | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict, Message]:
    """(status, JSON body, headers) of a request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null"), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null"), error.headers


def log_lines(log: Path, containing: str, timeout: float = 10.0) -> list[str]:
    """The log's lines containing `containing`, waiting a little for them to be written."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in log.read_text(encoding="utf-8").splitlines() if containing in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_a_request_id_is_returned_and_carried_by_its_log_lines(text_server: tuple[str, Path]) -> None:
    url, log = text_server
    status, _, headers = call(url, "/api/health", headers={"X-Request-ID": "lb-7f3a.42"})
    assert status == 200 and headers["X-Request-ID"] == "lb-7f3a.42"
    assert any("GET /api/health 200" in line for line in log_lines(log, "[lb-7f3a.42]"))
    # Without one, or with one that is not a plain token, the server makes its own.
    made = call(url, "/api/config")[2]["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made) and log_lines(log, f"[{made}]")
    odd = call(url, "/api/config", headers={"X-Request-ID": 'x" level=ERROR ' + "y" * 200})[2]["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", odd)
    # Errors carry it too.
    assert call(url, "/api/documents/nope", headers={"X-Request-ID": "missing-doc"})[2]["X-Request-ID"] == "missing-doc"


def test_questions_and_the_key_stay_out_of_the_logs(text_server: tuple[str, Path]) -> None:
    url, log = text_server
    query = urllib.parse.urlencode({"q": SECRET_QUESTION})
    auth = {"Authorization": f"Bearer {KEY}", "X-API-Key": KEY}
    assert call(url, f"/api/search?{query}", headers={**auth, "X-Request-ID": "secret-search"})[0] == 200
    assert call(url, "/api/ask", {"question": SECRET_QUESTION}, headers=auth)[0] == 200
    assert log_lines(log, "[secret-search]")  # the request was logged ...
    text = log.read_text(encoding="utf-8")
    assert SECRET_QUESTION not in text and urllib.parse.quote(SECRET_QUESTION) not in text  # ... not its question
    assert KEY not in text


def test_a_refused_question_is_logged_without_its_text(text_server: tuple[str, Path]) -> None:
    url, log = text_server
    status, body, _ = call(url, "/api/ask", {"question": OFF_TOPIC}, headers={"X-Request-ID": "refused-1"})
    assert status == 200 and body["found"] is False
    assert any("问答未找到相关内容" in line for line in log_lines(log, "[refused-1]"))
    assert OFF_TOPIC not in log.read_text(encoding="utf-8")


def test_a_generation_fallback_is_logged_with_its_reason(text_server: tuple[str, Path]) -> None:
    url, log = text_server
    question = {"question": "如何推动党建与医疗业务深度融合", "mode": "generate"}
    status, body, _ = call(url, "/api/ask", question, headers={"X-Request-ID": "fallback-1"})
    assert status == 200 and body["fallback_reason"]["code"] == "llm_not_configured"
    assert any("llm_not_configured" in line for line in log_lines(log, "[fallback-1]"))


def test_a_version_switch_is_logged_once_by_the_index_watcher(
    text_server: tuple[str, Path], settings: Settings
) -> None:
    url, log = text_server
    before = call(url, "/api/health")[1]["index_version"]
    folder = settings.index_dir.parent / "cli-docs"
    write(folder, "switch.txt", "药剂科党支部开展“处方点评党员先行”活动，党员药师每周点评不合理处方并公开通报。\n")
    assert run_cli(settings, "add", str(folder)).returncode == 0
    # Requests never load a version: the watcher thread finds another process's change (at most a
    # second later) and logs the switch outside any request, so with no request id.
    switched = [line for line in log_lines(log, f"原版本 {before}") if "已切换到新索引版本" in line]
    assert len(switched) == 1 and "[-]" in switched[0]
    after = call(url, "/api/health", headers={"X-Request-ID": "found-switch"})[1]["index_version"]
    assert after != before and after in switched[0]


def test_an_upload_job_is_logged_from_queue_to_done(text_server: tuple[str, Path]) -> None:
    url, log = text_server
    text = "急诊科党支部设立“绿色通道党员岗”，胸痛卒中患者到院后由党员医生全程陪同检查。\n".encode()
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="job.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n" + text + b"\r\n--XyZ--\r\n"
    )
    headers = {"X-API-Key": KEY, "Content-Type": "multipart/form-data; boundary=XyZ", "X-Request-ID": "upload-1"}
    request = urllib.request.Request(f"{url}/api/documents", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 202
        job_id = json.loads(response.read())["job_id"]
    assert any("已排队" in line for line in log_lines(log, "[upload-1]") if job_id in line)
    done = log_lines(log, f"上传任务 {job_id} 完成", timeout=120)
    assert done, log.read_text(encoding="utf-8")[-3000:]
    assert log_lines(log, f"上传任务 {job_id} 开始")


def test_json_lines_with_questions_when_asked_for(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "json.log"
    with live_server(settings, log, DJQA_LOG_FORMAT="json", DJQA_LOG_QUESTIONS="true") as url:
        assert call(url, "/api/search", {"query": SECRET_QUESTION}, headers={"X-Request-ID": "json-1"})[0] == 200
        assert log_lines(log, "json-1")
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    mine = [line for line in lines if line["request_id"] == "json-1"]
    assert any(line.get("question") == SECRET_QUESTION for line in mine)
    access = next(line for line in mine if line.get("route") == "/api/search")
    assert access["status"] == 200 and access["method"] == "POST" and access["duration_ms"] > 0
    assert {"time", "level", "logger", "message"} <= access.keys()
    assert any("已加载" in line["message"] for line in lines)  # start-up lines are JSON lines too
