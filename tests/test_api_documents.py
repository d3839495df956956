"""Uploading and deleting documents over HTTP: the key, the limits, upload jobs, the originals."""

import fcntl
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.embed import Encoders
from service.engine import build_index
from service.http.app import create_app
from service.index import IndexUnavailable
from service.stores import StoreUnreachable
from service.tokenize import WordTokenizer
from tests.conftest import live_server
from tests.make_documents import cjk_collection, make_docx, make_pdf, truetype_subset

KEY = "test-key-7f3a9c"
WRITE = {"X-API-Key": KEY}
FEVER_CLINIC = "发热门诊党员突击队实行二十四小时轮值，队员佩戴党员徽章上岗，在疫情防控一线亮身份、作表率。\n"
NIGHT_SHIFT = "夜班护士党小组建立“暖心驿站”，为夜间就诊的老年患者提供代挂号、代取药和陪同检查服务。\n"
PLAN_ROW = ["组建互联网医院党员先锋岗", "信息中心党支部"]
PDF_TEXT = "　　康复科党支部开展“银龄课堂”志愿服务，每月走进社区为老年人讲解防跌倒和慢病康复知识。"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, seed_settings: Settings) -> Settings:
    """A private copy of the seed index, its own uploads folder, a key and a small upload limit."""
    folder = tmp_path_factory.mktemp("documents-api")
    shutil.copytree(seed_settings.index_dir, folder / "index")
    update = {
        "index_dir": folder / "index",
        "uploads_dir": folder / "uploads",
        "api_key": KEY,
        "max_upload_bytes": 64 * 1024,
    }
    return seed_settings.model_copy(update=update)


@pytest.fixture(scope="module")
def client(settings: Settings, encoders: Encoders, tokenizer: WordTokenizer) -> Iterator[TestClient]:
    with TestClient(create_app(settings, encoders, tokenizer), raise_server_exceptions=False) as test_client:
        yield test_client


def upload(client: TestClient, *files: tuple[str, bytes], headers: dict[str, str] = WRITE) -> httpx.Response:
    return client.post("/api/documents", files=[("files", (name, data)) for name, data in files], headers=headers)


def raw_upload(client: TestClient, file_name: str, data: bytes) -> httpx.Response:
    """A form built by hand, so the file name reaches the server exactly as written."""
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="'
        + file_name.encode()
        + b'"\r\nContent-Type: text/plain\r\n\r\n'
        + data
        + b"\r\n--XyZ--\r\n"
    )
    return client.post(
        "/api/documents", content=body, headers={**WRITE, "content-type": "multipart/form-data; boundary=XyZ"}
    )


@contextmanager
def app_settings(client: TestClient, **update: object) -> Iterator[None]:
    """The app's settings changed for the duration (the key checks read them on every request)."""
    original = client.app.state.settings
    client.app.state.settings = original.model_copy(update=update)
    try:
        yield
    finally:
        client.app.state.settings = original


def finished(client: TestClient | httpx.Client, response: httpx.Response, headers: dict[str, str] = WRITE) -> dict:
    """The upload's job once it is done or failed (the upload answered 202 with its location)."""
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    assert location == f"/api/jobs/{response.json()['job_id']}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(location, headers=headers).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"the job did not finish: {job}")


def uploaded(client: TestClient, *files: tuple[str, bytes], headers: dict[str, str] = WRITE) -> dict:
    """Upload and wait for the job: its state, status and result."""
    return finished(client, upload(client, *files, headers=headers), headers)


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}
    assert payload["error"]["code"] == code
    return payload["error"]["message"]


def top_doc(client: TestClient, query: str) -> str | None:
    response = client.post("/api/search", json={"query": query, "top_k": 1, "mode": "lexical"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    return results[0]["doc_id"] if results else None


def listed(client: TestClient) -> dict[str, dict]:
    return {d["doc_id"]: d for d in client.get("/api/documents").json()["documents"]}


@pytest.fixture(scope="module")
def pdf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if cjk_collection() is None:
        pytest.skip("no CJK font for making PDFs: apt-get install fonts-noto-cjk (make test does)")
    folder = tmp_path_factory.mktemp("pdf")
    font = truetype_subset(PDF_TEXT, folder / "cjk.ttf")
    return make_pdf(folder / "silver.pdf", [PDF_TEXT], font).read_bytes()


# ---------- the key ----------


def test_writes_are_disabled_without_a_configured_key(client: TestClient) -> None:
    with app_settings(client, api_key=None):
        message = error_of(upload(client, ("a.txt", FEVER_CLINIC.encode())), 403, "writes_disabled")
        error_of(client.delete("/api/documents/anything", headers=WRITE), 403, "writes_disabled")
    assert "DJQA_API_KEY" in message and "重启服务" in message


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}],
    ids=["missing", "wrong-x-api-key", "wrong-bearer", "not-bearer"],
)
def test_missing_or_wrong_key_is_401_and_changes_nothing(
    client: TestClient, settings: Settings, headers: dict[str, str]
) -> None:
    version = (settings.index_dir / "CURRENT").read_text()
    response = upload(client, ("unauthorised.txt", FEVER_CLINIC.encode()), headers=headers)
    error_of(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    some_doc = next(iter(listed(client)))
    error_of(client.delete(f"/api/documents/{some_doc}", headers=headers), 401, "unauthorized")
    assert (settings.index_dir / "CURRENT").read_text() == version


def test_bearer_and_x_api_key_both_work(client: TestClient) -> None:
    added = uploaded(client, ("bearer.txt", NIGHT_SHIFT.encode()), headers={"Authorization": f"Bearer {KEY}"})
    assert added["state"] == "done" and added["status"] == 201, added
    removed = client.delete("/api/documents/bearer", headers={"X-API-Key": KEY})
    assert removed.status_code == 200 and removed.json() == {"removed": "bearer"}


def test_reads_need_the_key_only_when_configured(client: TestClient) -> None:
    assert client.get("/api/documents").status_code == 200
    with app_settings(client, read_requires_key=True):
        error_of(client.post("/api/search", json={"query": "党建"}), 401, "unauthorized")
        error_of(client.get("/api/documents"), 401, "unauthorized")
        assert client.post("/api/search", json={"query": "党建"}, headers=WRITE).status_code == 200
        assert client.get("/api/documents", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.get("/api/health").status_code == 200, "health stays open for monitors"
    with app_settings(client, read_requires_key=True, api_key=None):
        assert "DJQA_API_KEY" in error_of(client.get("/api/documents"), 403, "key_not_configured")


# ---------- uploads ----------


def test_uploaded_txt_docx_and_pdf_are_found_by_search(
    client: TestClient, settings: Settings, tmp_path: Path, pdf_bytes: bytes
) -> None:
    plan = make_docx(
        tmp_path / "plan.docx", "信息中心党支部工作计划", [("Heading 1", "重点任务"), [["任务", "责任人"], PLAN_ROW]]
    )
    job = uploaded(
        client,
        ("发热门诊突击队.txt", FEVER_CLINIC.encode()),
        ("支部工作计划.docx", plan.read_bytes()),
        ("银龄课堂.pdf", pdf_bytes),
    )
    assert job["state"] == "done" and job["status"] == 201 and job["error"] is None, job
    assert job["files"] == ["发热门诊突击队.txt", "支部工作计划.docx", "银龄课堂.pdf"]
    assert job["passages_done"] == job["passages_total"] >= 3
    report = job["result"]
    assert [(d["file"], d["doc_id"]) for d in report["added"]] == [
        ("发热门诊突击队.txt", "发热门诊突击队"),
        ("支部工作计划.docx", "支部工作计划"),
        ("银龄课堂.pdf", "银龄课堂"),
    ]
    assert all(d["title"] and d["passages"] >= 1 for d in report["added"])
    assert report["replaced"] == report["skipped"] == report["failed"] == []
    # Served at once: the job was done after the app switched to the new index version.
    assert top_doc(client, "发热门诊党员突击队轮值") == "发热门诊突击队"
    assert top_doc(client, "互联网医院党员先锋岗") == "支部工作计划"
    assert top_doc(client, "银龄课堂 防跌倒") == "银龄课堂"
    documents = listed(client)
    assert documents["支部工作计划"]["source"] == "支部工作计划.docx" and documents["银龄课堂"]["added_at"]
    for name in ("发热门诊突击队.txt", "支部工作计划.docx", "银龄课堂.pdf"):
        assert (settings.uploads_dir / name).is_file()
    assert (settings.uploads_dir / "支部工作计划.docx").read_bytes() == plan.read_bytes()


def test_same_content_again_is_409_under_any_name(client: TestClient) -> None:
    assert uploaded(client, ("duplicate.txt", "党员先锋岗每月开展一次义诊进社区活动。\n".encode()))["status"] == 201
    message = error_of(
        upload(client, ("duplicate.txt", "党员先锋岗每月开展一次义诊进社区活动。\n".encode())),
        409,
        "duplicate_document",
    )
    assert "duplicate" in message
    error_of(
        upload(client, ("copy.txt", "党员先锋岗每月开展一次义诊进社区活动。\n".encode())), 409, "duplicate_document"
    )


def test_same_name_with_changed_content_replaces_the_document(client: TestClient, settings: Settings) -> None:
    assert uploaded(client, ("值班制度.txt", FEVER_CLINIC.replace("二十四", "十二").encode()))["status"] == 201
    job = uploaded(
        client, ("值班制度.txt", "行政后勤党支部推行“首问负责制”，群众来电来访一律登记、限时回复。\n".encode())
    )
    assert job["state"] == "done" and job["status"] == 200, job
    assert [d["doc_id"] for d in job["result"]["replaced"]] == ["值班制度"] and job["result"]["added"] == []
    assert top_doc(client, "首问负责制 限时回复") == "值班制度"
    assert "首问负责制" in (settings.uploads_dir / "值班制度.txt").read_text(encoding="utf-8")


def test_file_over_the_limit_is_413_and_nothing_of_the_upload_is_added(client: TestClient) -> None:
    big = ("超大文件.txt", (NIGHT_SHIFT * 1000).encode())  # ~130 KB against a 64 KB limit
    message = error_of(
        upload(client, ("同批小文件.txt", "同批的小文件也不应被收录。\n".encode()), big), 413, "file_too_large"
    )
    assert "超大文件.txt" in message and "64 KB" in message
    assert "同批小文件" not in listed(client)


def test_unsupported_type_is_415_with_the_supported_list(client: TestClient) -> None:
    message = error_of(upload(client, ("slides.pptx", b"PK\x03\x04 slides")), 415, "unsupported_file_type")
    assert "slides.pptx" in message and ".docx" in message and ".pdf" in message


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.docx", b"PK\x03\x04 not really a word file", "已损坏"),
        ("broken.pdf", b"%PDF-1.7\n garbage", "损坏"),
        ("empty.txt", b"", "空"),
        ("blank.md", b"\n  \n", "正文"),
    ],
)
def test_unreadable_files_are_422_naming_file_and_reason(
    client: TestClient, name: str, data: bytes, reason: str
) -> None:
    message = error_of(upload(client, (name, data)), 422, "unreadable_file")
    assert name in message and reason in message


def test_scanned_pdf_is_422_asking_for_ocr(client: TestClient, tmp_path: Path) -> None:
    from fpdf import FPDF

    scan = FPDF()
    scan.add_page()
    scan.rect(20, 20, 170, 250, style="F")
    scan.output(str(tmp_path / "scan.pdf"))
    message = error_of(upload(client, ("扫描件.pdf", (tmp_path / "scan.pdf").read_bytes())), 422, "unreadable_file")
    assert "扫描件.pdf" in message and "OCR" in message


def test_mixed_upload_adds_the_good_files_and_lists_the_others(client: TestClient) -> None:
    assert uploaded(client, ("mixed-old.txt", "药学部党支部开展合理用药宣讲。\n".encode()))["status"] == 201
    response = upload(
        client,
        ("mixed-new.txt", "检验科党支部推行报告时限承诺制。\n".encode()),
        ("mixed-copy.txt", "药学部党支部开展合理用药宣讲。\n".encode()),
        ("notes.xlsx", b"PK"),
        ("bad.docx", b"PK\x03\x04"),
    )
    assert response.json()["files"] == ["mixed-new.txt"], "only the file to add is queued"
    assert [f["file"] for f in response.json()["result"]["failed"]] == ["notes.xlsx", "bad.docx"], "known at once"
    job = finished(client, response)
    assert job["status"] == 201, job
    report = job["result"]
    assert [d["doc_id"] for d in report["added"]] == ["mixed-new"]
    assert [(f["file"], f["doc_id"]) for f in report["skipped"]] == [("mixed-copy.txt", "mixed-old")]
    assert [(f["file"], f["reason"][:2]) for f in report["failed"]] == [("notes.xlsx", "不支"), ("bad.docx", "文件")]
    assert "mixed-old" in report["skipped"][0]["reason"] and "mixed-copy.txt" not in report["skipped"][0]["reason"]


def test_upload_where_each_file_fails_differently_is_422_upload_failed(client: TestClient) -> None:
    message = error_of(upload(client, ("a.pptx", b"x"), ("b.txt", b"")), 422, "upload_failed")
    assert "a.pptx" in message and "b.txt" in message


def test_form_errors_are_answered_in_the_error_shape(client: TestClient) -> None:
    """Each error of the form reader has its own status and code (service/http/errors.py CORE_ERRORS)."""
    with app_settings(client, max_upload_files=2):
        files = [(f"第{n}份.txt", "检验科党支部开展“质量月”活动。\n".encode()) for n in range(3)]
        assert "2" in error_of(upload(client, *files), 400, "too_many_files")
    no_boundary = {**WRITE, "content-type": "multipart/form-data"}
    error_of(client.post("/api/documents", content=b"--XyZ--\r\n", headers=no_boundary), 400, "invalid_form")
    assert not list(client.app.state.jobs.store.folder.glob(".receiving-*")), "a refused form leaves nothing behind"


def test_upload_needs_a_form_with_files(client: TestClient) -> None:
    error_of(client.post("/api/documents", json={"files": []}, headers=WRITE), 415, "unsupported_media_type")
    error_of(
        client.post("/api/documents", data={"other": "x"}, files={"x": ("a.txt", b"ab")}, headers=WRITE),
        400,
        "no_files",
    )


@pytest.mark.parametrize(
    ("file_name", "doc_id"),
    [
        ("../../evil.txt", "evil"),
        ("..\\\\..\\\\winevil.txt", "winevil"),
        ("/tmp/absolute.txt", "absolute"),
        ("C:\\\\Windows\\\\drive.txt", "drive"),
        ("..", None),
    ],
)
def test_file_names_with_paths_never_write_outside_the_uploads_folder(
    client: TestClient, settings: Settings, file_name: str, doc_id: str | None
) -> None:
    module_folder = settings.uploads_dir.parent
    text = f"路径测试{doc_id}：后勤党支部坚持每周一次安全生产巡查。\n".encode()
    response = raw_upload(client, file_name, text)
    if doc_id is None:
        error_of(response, 415, "unsupported_file_type")
    else:
        job = finished(client, response)
        assert job["status"] == 201, job
        assert job["result"]["added"][0]["doc_id"] == doc_id
        assert (settings.uploads_dir / f"{doc_id}.txt").read_bytes() == text
    assert {p.name for p in module_folder.iterdir()} == {"index", "uploads", "jobs"}
    assert not (module_folder.parent / "evil.txt").exists() and not Path("/tmp/absolute.txt").exists()
    assert all(p.parent == settings.uploads_dir and p.is_file() for p in settings.uploads_dir.rglob("*"))
    assert not list(settings.jobs_path.glob(".receiving-*")), "the upload's received files are deleted or queued"
    assert not list(settings.jobs_path.glob("*/upload-*")), "a finished job's files are deleted"


# ---------- delete ----------


def test_deleted_document_is_gone_from_search_list_and_uploads(client: TestClient, settings: Settings) -> None:
    assert uploaded(client, ("待删除.txt", "麻醉科党支部设立“无痛诊疗”党员示范岗。\n".encode()))["status"] == 201
    assert top_doc(client, "无痛诊疗 示范岗") == "待删除" and (settings.uploads_dir / "待删除.txt").is_file()
    response = client.delete("/api/documents/待删除", headers=WRITE)
    assert response.status_code == 200 and response.json() == {"removed": "待删除"}
    assert top_doc(client, "无痛诊疗 示范岗") != "待删除"
    assert "待删除" not in listed(client) and not (settings.uploads_dir / "待删除.txt").exists()
    error_of(client.get("/api/documents/待删除"), 404, "document_not_found")


def test_unknown_document_delete_is_404(client: TestClient) -> None:
    assert "no-such-doc" in error_of(
        client.delete("/api/documents/no-such-doc", headers=WRITE), 404, "document_not_found"
    )


def test_delete_while_the_index_is_unavailable_is_503(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(doc_ids: list[str]) -> None:
        raise IndexUnavailable("索引已损坏，请重建")

    monkeypatch.setattr(client.app.state.live, "delete_documents", unavailable)
    message = error_of(client.delete("/api/documents/anything", headers=WRITE), 503, "index_unavailable")
    assert message == "索引已损坏，请重建"


def test_store_unavailable_names_neither_the_store_nor_its_client_words(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(doc_ids: list[str]) -> None:
        reason = ConnectionError("Fail connecting to server on 10.20.30.40:19530, illegal connection params")
        raise StoreUnreachable("http://10.20.30.40:19530", reason)

    monkeypatch.setattr(client.app.state.live, "delete_documents", unreachable)
    message = error_of(client.delete("/api/documents/anything", headers=WRITE), 503, "store_unavailable")
    assert "Milvus" in message and "10.20.30.40" not in message and "Fail" not in message, message


def test_delete_while_another_writer_holds_the_index_is_503_index_busy(
    tmp_path: Path, settings: Settings, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    shutil.copytree(settings.index_dir, tmp_path / "index")
    update = {"writer_wait_seconds": 0.3, "index_dir": tmp_path / "index", "uploads_dir": tmp_path / "uploads"}
    patient = settings.model_copy(update=update)
    with TestClient(create_app(patient, encoders, tokenizer)) as test_client:
        doc_id = test_client.get("/api/documents").json()["documents"][0]["doc_id"]
        with (patient.index_dir / ".lock").open("a") as handle:  # another writer (a build) holds it
            fcntl.flock(handle, fcntl.LOCK_EX)
            message = error_of(test_client.delete(f"/api/documents/{doc_id}", headers=WRITE), 503, "index_busy")
            # An id the served version does not have is refused at once, without waiting for the lock.
            error_of(test_client.delete("/api/documents/no-such-doc", headers=WRITE), 404, "document_not_found")
        assert "仍在进行" in message
        assert test_client.delete(f"/api/documents/{doc_id}", headers=WRITE).status_code == 200


def test_last_document_cannot_be_deleted(
    tmp_path: Path, settings: Settings, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    (tmp_path / "only.txt").write_text(NIGHT_SHIFT, encoding="utf-8")
    single = settings.model_copy(update={"index_dir": tmp_path / "index", "uploads_dir": tmp_path / "uploads"})
    build_index([tmp_path / "only.txt"], single, encoders, tokenizer)
    with TestClient(create_app(single, encoders, tokenizer)) as test_client:
        message = error_of(test_client.delete("/api/documents/only", headers=WRITE), 409, "last_document")
        assert "至少" in message
        assert test_client.get("/api/health").json()["documents"] == 1


# ---------- a real server: searches go on while an upload is processed ----------

WORDS = [
    "党支部",
    "党员",
    "医院",
    "患者",
    "门诊",
    "护理",
    "科室",
    "服务",
    "制度",
    "学习",
    "教育",
    "廉洁",
    "医德",
    "质量",
    "安全",
    "群众",
    "志愿",
    "社区",
    "健康",
    "培训",
    "考核",
    "责任",
    "监督",
    "改革",
    "创新",
    "队伍",
    "文化",
    "宣传",
    "检查",
    "整改",
    "落实",
    "基层",
    "疫情",
    "防控",
    "急诊",
    "药品",
    "预约",
    "随访",
]


def long_document(paragraphs: int) -> str:
    """Distinct paragraphs (so every one is encoded), padded past 1 MB to show uploads skip the JSON limit."""
    lines = []
    for number in range(paragraphs):
        words = [WORDS[(number * 7 + step * 3) % len(WORDS)] for step in range(24)]
        sentences = ["".join(words[i : i + 6]) + f"第{number}项" for i in range(0, 24, 6)]
        lines.append("，".join(sentences[:2]) + "。" + "，".join(sentences[2:]) + "。")
    lines.insert(paragraphs // 2, "口腔科党支部组建“微笑护齿”党员服务队，每学期走进中小学开展龋齿筛查。")
    return "\n".join(lines) + "\n" + " " * (1024 * 1024) + "\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, seed_settings: Settings) -> Iterator[tuple[str, Path]]:
    """`dangjian-qa serve` on a copy of the seed index, with an empty vector cache so uploads really encode."""
    folder = tmp_path_factory.mktemp("documents-server")
    shutil.copytree(seed_settings.index_dir, folder / "index")
    cache = folder / "cache"
    cache.mkdir()
    for shared in ("onnx", "jieba"):  # the exported model and dictionary, not the vectors
        if (seed_settings.cache_dir / shared).is_dir():
            (cache / shared).symlink_to(seed_settings.cache_dir / shared)
    settings = seed_settings.model_copy(
        update={"index_dir": folder / "index", "cache_dir": cache, "uploads_dir": folder / "uploads"}
    )
    # The test's document is padded with a megabyte of spaces, which count as characters.
    with live_server(settings, folder / "server.log", DJQA_API_KEY=KEY, DJQA_MAX_DOCUMENT_CHARS="2000000") as url:
        yield url, folder / "uploads"


def test_searches_keep_answering_while_an_upload_job_runs(server: tuple[str, Path]) -> None:
    """The upload answers 202 once its file is stored and checked; the job reports its progress."""
    url, uploads = server
    document = long_document(150).encode()
    assert len(document) > 1024 * 1024
    indexing = threading.Event()
    indexed = threading.Event()
    answers: list[tuple[int, float]] = []  # (status, when) of searches sent while the job ran

    def search_until_indexed() -> None:
        indexing.wait(timeout=30)
        with httpx.Client(base_url=url, timeout=30) as http:
            deadline = time.monotonic() + 120
            while not indexed.is_set() and time.monotonic() < deadline:
                response = http.post("/api/search", json={"query": "如何推动党建与医疗业务深度融合", "top_k": 3})
                answers.append((response.status_code, time.monotonic()))

    searchers = [threading.Thread(target=search_until_indexed) for _ in range(2)]
    for searcher in searchers:
        searcher.start()
    progress: list[tuple[int, int]] = []
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        with httpx.Client(base_url=url, timeout=180, headers=headers) as http:
            response = http.post("/api/documents", files={"files": ("口腔科党建材料.txt", document)})
            assert response.status_code == 202, response.text
            indexing.set()
            started = time.monotonic()
            job = response.json()
            while job["state"] in ("queued", "running") and time.monotonic() - started < 150:
                progress.append((job["passages_done"], job["passages_total"]))
                time.sleep(0.2)
                job = http.get(response.headers["location"]).json()
            ended = time.monotonic()
    finally:
        indexed.set()
        for searcher in searchers:
            searcher.join(timeout=60)
    assert job["state"] == "done" and job["status"] == 201, job
    assert job["result"]["added"][0]["passages"] >= 150 == min(150, job["passages_total"])
    assert any(0 < done < total for done, total in progress), f"no progress seen between start and end: {progress}"
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    during = [status for status, when in answers if started <= when <= ended]
    assert len(during) >= 3, f"the job took {ended - started:.1f}s, searches answered meanwhile: {len(during)}"
    assert set(status for status, _ in answers) == {200}
    found = httpx.post(f"{url}/api/search", json={"query": "微笑护齿 龋齿筛查", "top_k": 1, "mode": "lexical"}).json()
    assert found["results"][0]["doc_id"] == "口腔科党建材料"
    assert (uploads / "口腔科党建材料.txt").stat().st_size == len(document)


def test_upload_with_a_name_of_320_bytes_is_added_kept_and_deleted(client: TestClient, settings: Settings) -> None:
    name = "𠀀" * 80 + ".txt"  # 80 four-byte characters: once a doc id too long to be a file name
    job = uploaded(client, (name, "眼科党支部开展“光明行”白内障义诊。\n".encode()))
    assert job["state"] == "done" and job["status"] == 201, job
    doc_id = job["result"]["added"][0]["doc_id"]
    assert len(doc_id.encode()) <= 240 and (settings.uploads_dir / f"{doc_id}.txt").is_file()
    response = client.delete(f"/api/documents/{doc_id}", headers=WRITE)
    assert response.status_code == 200, response.text
    assert not (settings.uploads_dir / f"{doc_id}.txt").exists()


def test_unknown_job_is_404(client: TestClient) -> None:
    error_of(client.get("/api/jobs/0123456789abcdef", headers=WRITE), 404, "job_not_found")
    error_of(client.get("/api/jobs/" + "党" * 300, headers=WRITE), 404, "job_not_found")  # no OSError: name too long
    error_of(client.get("/api/jobs/../../etc", headers=WRITE), 404, "not_found")
    error_of(client.get("/api/jobs/0123456789abcdef"), 401, "unauthorized")


# ---------- doc ids that the name alone cannot give, and messages meant for the user ----------


def test_two_files_named_only_with_emoji_become_two_documents(client: TestClient) -> None:
    smiles, cats = "😀" * 75 + ".txt", "😺" * 75 + ".txt"
    first = uploaded(client, (smiles, "放射科党支部开展“阳光放射”便民服务，缩短检查预约等候时间。\n".encode()))
    second = uploaded(client, (cats, "营养科党支部开展“科学膳食进社区”宣讲，为慢病患者定制食谱。\n".encode()))
    assert first["status"] == second["status"] == 201, (first, second)
    first_id, second_id = (job["result"]["added"][0]["doc_id"] for job in (first, second))
    assert first_id != second_id, "neither silently replaces the other"
    listed = {row["doc_id"] for row in client.get("/api/documents").json()["documents"]}
    assert {first_id, second_id} <= listed
    again = uploaded(client, (smiles, "放射科党支部开展“阳光放射”便民服务，检查报告当天可取。\n".encode()))
    assert [row["doc_id"] for row in again["result"]["replaced"]] == [first_id], "the same name still replaces"


def test_names_differing_only_in_punctuation_are_two_documents(client: TestClient) -> None:
    round_brackets = uploaded(client, ("院感制度（一）.txt", "院感科党支部每月开展手卫生专项督查。\n".encode()))
    square_brackets = uploaded(client, ("院感制度【一】.txt", "院感科党支部每季度组织一次院感应急演练。\n".encode()))
    ids = [job["result"]["added"][0]["doc_id"] for job in (round_brackets, square_brackets)]
    assert ids[0] != ids[1] and all(doc_id.startswith("院感制度_一_") for doc_id in ids), ids


def test_a_file_name_over_4_kb_is_refused_saying_the_name_is_too_long(client: TestClient) -> None:
    message = error_of(raw_upload(client, "党" * 1500 + ".txt", "内容".encode()), 400, "invalid_form")
    assert "文件名过长" in message


def test_index_unavailable_names_no_server_folder(
    tmp_path: Path, settings: Settings, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    shutil.copytree(settings.index_dir, tmp_path / "index")
    private = settings.model_copy(update={"index_dir": tmp_path / "index", "uploads_dir": tmp_path / "uploads"})
    with TestClient(create_app(private, encoders, tokenizer)) as test_client:
        doc_id = test_client.get("/api/documents").json()["documents"][0]["doc_id"]
        version = (private.index_dir / "CURRENT").read_text().strip()
        (private.index_dir / "versions" / version / "documents.jsonl").write_text("", encoding="utf-8")  # damaged
        message = error_of(test_client.delete(f"/api/documents/{doc_id}", headers=WRITE), 503, "index_unavailable")
    assert "索引已损坏" in message and version in message
    assert str(tmp_path) not in message and "/" not in message, message


def test_a_field_of_the_wrong_type_is_refused_in_chinese(client: TestClient) -> None:
    response = client.post("/api/ask", json={"question": "三会一课", "stream": "sometimes"})
    message = error_of(response, 422, "invalid_parameter")
    assert "布尔" in message and "Input should" not in message, message
