import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient

from service.config import PROJECT_ROOT, Settings
from service.embed import Encoders
from service.engine import build_index
from service.generate import Generator
from service.http.app import create_app
from service.tokenize import WordTokenizer

T = TypeVar("T")
QUESTION = "如何推动党建与医疗业务深度融合"
MARK = re.compile(r"【(\d+)】")


@pytest.fixture(scope="module")
def client(seed_settings: Settings, encoders: Encoders, tokenizer: WordTokenizer) -> Iterator[TestClient]:
    with TestClient(create_app(seed_settings, encoders, tokenizer), raise_server_exceptions=False) as test_client:
        yield test_client


def search(client: TestClient, **body: object) -> dict:
    response = client.post("/api/search", json={"query": QUESTION, **body})
    assert response.status_code == 200, response.text
    return response.json()


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}
    assert payload["error"]["code"] == code
    assert re.search(r"[\u4e00-\u9fff]", payload["error"]["message"]), "messages are Chinese"
    return payload["error"]["message"]


# ---------- search ----------


def test_search_returns_ranked_passages_with_their_evidence(client: TestClient) -> None:
    payload = search(client, top_k=5)
    assert payload["query"] == QUESTION and payload["mode"] == "hybrid" and payload["took_ms"] >= 0
    results = payload["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    top = results[0]
    assert 0.0 <= top["score"] <= 1.0 and "融合" in top["text"]
    assert top["section"] == " › ".join(top["section_path"])
    assert top["dense"]["rank"] >= 1 and top["lexical"]["rank"] >= 1
    assert {"党建", "融合"} <= set(top["matched_terms"])
    for key in ("passage_id", "doc_id", "title", "doc_type", "year", "page", "paragraph", "start", "end"):
        assert key in top


def test_highlights_are_offsets_of_matched_terms_in_the_text(client: TestClient) -> None:
    for result in search(client, top_k=10)["results"]:
        assert result["highlights"]
        for start, end in result["highlights"]:
            assert 0 <= start < end <= len(result["text"])
            assert any(term in result["text"][start:end].lower() for term in result["matched_terms"])


def test_context_is_the_neighbouring_text_of_the_same_document(client: TestClient) -> None:
    results = search(client, top_k=10)["results"]
    assert any(r["context"]["before"] for r in results) and any(r["context"]["after"] for r in results)
    for result in results:
        text = client.get(f"/api/documents/{result['doc_id']}").json()["text"]
        before, after = result["context"]["before"], result["context"]["after"]
        assert text[: result["start"]].rstrip().endswith(before.removeprefix("…"))
        assert text[result["end"] :].lstrip().startswith(after.removesuffix("…"))
        assert len(before) <= 151 and len(after) <= 151
        # Cut at sentence ends: a context that does not reach the document's edge starts a sentence.
        if before and not before.startswith("…") and len(text[: result["start"]].strip()) > len(before):
            # (a line break counts: a heading line ends without a mark, so only spaces are stripped)
            assert text[: result["start"]].rstrip()[: -len(before)].rstrip(" \t\u3000")[-1] in "。！？；;!?\n”」）)"


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_every_mode_answers(client: TestClient, mode: str) -> None:
    payload = search(client, mode=mode, top_k=3)
    assert payload["mode"] == mode and len(payload["results"]) == 3
    if mode == "dense":
        assert all(r["lexical"] is None for r in payload["results"])


def test_get_search_gives_the_same_results_as_post(client: TestClient) -> None:
    response = client.get("/api/search", params={"q": QUESTION, "top_k": 4, "mode": "lexical"})
    assert response.status_code == 200
    ids = [r["passage_id"] for r in response.json()["results"]]
    assert ids == [r["passage_id"] for r in search(client, top_k=4, mode="lexical")["results"]]


def test_filters_restrict_the_results(client: TestClient) -> None:
    documents = client.get("/api/documents").json()["documents"]
    doc_id = documents[1]["doc_id"]
    results = search(client, top_k=10, doc_ids=[doc_id])["results"]
    assert results and {r["doc_id"] for r in results} == {doc_id}
    speech = next(d for d in documents if d["doc_type"])
    results = search(client, top_k=10, doc_type=speech["doc_type"])["results"]
    assert results and {r["doc_type"] for r in results} == {speech["doc_type"]}
    assert search(client, doc_ids=["no-such-document"])["results"] == []
    assert search(client, year=1900)["results"] == []


# ---------- ask ----------


def test_ask_answers_from_cited_sentences(client: TestClient) -> None:
    response = client.post("/api/ask", json={"question": QUESTION})
    assert response.status_code == 200
    payload = response.json()
    assert payload["found"] and 0.5 <= payload["confidence"] <= 1.0
    citations = payload["citations"]
    marks = [int(n) for n in MARK.findall(payload["answer"])]
    assert marks and sorted(set(marks)) == list(range(1, len(citations) + 1))
    assert marks == sorted(marks), "citations are numbered in order of appearance"
    sentences = [s for s in MARK.split(payload["answer"])[::2] if s]
    assert 1 <= len(sentences) <= 4 and len(set(sentences)) == len(sentences)
    for sentence, number in zip(sentences, marks, strict=True):
        assert sentence[:-1] in citations[number - 1]["text"], "every sentence is quoted from its citation"
    assert all(c["context"] is not None and c["title"] for c in citations)


@pytest.mark.parametrize("question", ["今天天气怎么样", "红烧肉怎么做好吃"])
def test_ask_says_not_found_for_off_topic_questions(client: TestClient, question: str) -> None:
    payload = client.post("/api/ask", json={"question": question}).json()
    assert payload["found"] is False and payload["citations"] == []
    assert payload["answer"].startswith("未找到") and "【" not in payload["answer"]
    assert 0.0 <= payload["confidence"] < 0.5


# ---------- documents and health ----------


def test_documents_list_counts_passages_and_characters(client: TestClient, seed_settings: Settings) -> None:
    documents = client.get("/api/documents").json()["documents"]
    assert len(documents) == len(list(seed_settings.seeds_dir.glob("*.txt")))
    for document in documents:
        assert document["title"] and document["passages"] > 0 and document["characters"] > 0
        assert document["source"].endswith(".txt") and document["added_at"]


def test_document_view_offsets_give_back_each_passage(client: TestClient) -> None:
    result = search(client, top_k=1)["results"][0]
    document = client.get(f"/api/documents/{result['doc_id']}").json()
    assert document["title"] == result["title"] and document["sections"]
    spans = {p["passage_id"]: p for p in document["passages"]}
    target = spans[result["passage_id"]]
    assert document["text"][target["start"] : target["end"]] == result["text"]
    assert all(0 <= p["start"] < p["end"] <= len(document["text"]) for p in document["passages"])


def test_health_names_the_index_and_the_model(client: TestClient, seed_settings: Settings) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["documents"] == 5 and health["passages"] > 50
    assert health["model"] == "m3e-small + multilingual-e5-small"
    assert [(m["name"], m["licence"], len(m["weights_sha256"])) for m in health["models"]] == [
        ("m3e-small", "non-commercial", 64),
        ("multilingual-e5-small", "MIT", 64),
    ]
    assert health["index_version"] == (seed_settings.index_dir / "CURRENT").read_text().strip()
    assert health["built_at"]


def test_page_and_assets_are_served_locally(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "党建问答" in page.text
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("/static/app.js", "/static/app.css"):
        assert client.get(asset).status_code == 200


def test_openapi_documents_the_api_in_chinese(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/api/search", "/api/ask", "/api/documents", "/api/documents/{doc_id}", "/api/health"} <= set(spec["paths"])
    assert "返回条数" in str(spec["components"]["schemas"]["SearchRequest"])
    assert client.get("/docs").status_code == 200


# ---------- errors: one shape, the right status ----------


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_blank_query_is_refused(client: TestClient, query: str) -> None:
    assert_error(client.post("/api/search", json={"query": query}), 400, "empty_query")
    assert_error(client.post("/api/ask", json={"question": query}), 400, "empty_query")
    assert_error(client.get("/api/search", params={"q": query}), 400, "empty_query")


def test_over_long_query_is_refused_with_the_limit(client: TestClient) -> None:
    message = assert_error(client.post("/api/search", json={"query": "党" * 501}), 400, "query_too_long")
    assert message == "问题长度不能超过 500 字"
    assert_error(client.post("/api/ask", json={"question": "党" * 501}), 400, "query_too_long")
    assert search(client, query="党" * 500)["query"] == "党" * 500


def test_body_over_one_megabyte_is_refused(client: TestClient) -> None:
    body = b'{"query": "' + b"a" * (1024 * 1024) + b'"}'
    headers = {"content-type": "application/json"}
    assert_error(client.post("/api/search", content=body, headers=headers), 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading the stream
        yield b'{"query": "'
        for _ in range(130):
            yield b"b" * 8192
        yield b'"}'

    assert_error(client.post("/api/ask", content=chunks(), headers=headers), 413, "body_too_large")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"query": "党建"'.encode(), "invalid_json"),
        (b"", "invalid_json"),
        (b"{'query': 'x'}", "invalid_json"),
        ('{"query": "党建工作"}'.encode("gbk"), "invalid_encoding"),
        (b'{"query": "\xff\xfe\xfd"}', "invalid_encoding"),
    ],
)
def test_malformed_bodies_are_400(client: TestClient, body: bytes, code: str) -> None:
    response = client.post("/api/search", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, code)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_non_json_bodies_are_415(client: TestClient, content_type: str) -> None:
    response = client.post("/api/ask", content=b'{"question": "x"}', headers={"content-type": content_type})
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": "党建", "top_k": 0}, "top_k"),
        ({"query": "党建", "top_k": 51}, "top_k"),
        ({"query": "党建", "top_k": "5"}, "top_k"),
        ({"query": "党建", "top_k": 2.5}, "top_k"),
        ({"query": "党建", "mode": "magic"}, "mode"),
        ({"query": 123}, "query"),
        ({"query": ["党建"]}, "query"),
        ({"query": "党建", "doc_ids": "abc"}, "doc_ids"),
        ({"query": "党建", "year": "二〇二三"}, "year"),
        ({"top_k": 5}, "query"),
    ],
)
def test_wrong_types_and_ranges_name_the_field(client: TestClient, body: dict, field: str) -> None:
    message = assert_error(client.post("/api/search", json=body), 422, "invalid_parameter")
    assert f"（{field}）" in message


def test_non_object_body_and_wrong_get_parameters_are_422(client: TestClient) -> None:
    assert_error(client.post("/api/search", json=["党建"]), 422, "invalid_parameter")
    assert "检索方式" in assert_error(
        client.get("/api/search", params={"q": "党建", "mode": "x"}), 422, "invalid_parameter"
    )
    assert "返回条数" in assert_error(
        client.get("/api/search", params={"q": "党建", "top_k": "abc"}), 422, "invalid_parameter"
    )
    assert_error(client.post("/api/ask", json={"question": "党建", "top_k": 0}), 422, "invalid_parameter")


def test_unknown_document_route_and_method(client: TestClient) -> None:
    assert_error(client.get("/api/documents/no-such-id"), 404, "document_not_found")
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
    assert_error(client.get("/static/missing.js"), 404, "not_found")
    assert_error(client.delete("/api/health"), 405, "method_not_allowed")
    assert_error(client.put("/api/search", json={"query": "x"}), 405, "method_not_allowed")


def test_unexpected_failures_are_500_in_the_same_shape(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> list:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(client.app.state.live.current().searcher, "search", broken)
    response = client.post("/api/search", json={"query": "党建"})
    assert_error(response, 500, "internal_error")
    assert response.headers["x-content-type-options"] == "nosniff" and "content-security-policy" in response.headers
    # Answered, not re-raised: a re-raised error makes uvicorn drop the client's connection.
    strict = TestClient(client.app, raise_server_exceptions=True)  # no `with`: the app's lifespan runs once
    assert_error(strict.post("/api/search", json={"query": "党建"}), 500, "internal_error")
    monkeypatch.undo()
    assert client.get("/api/health").status_code == 200, "the server keeps serving"


# ---------- the live index ----------


def wait_for(read: Callable[[], T], done: Callable[[T], bool], seconds: float = 20.0) -> T:
    """read() until done(value) (the index watcher loads a new version in the background)."""
    deadline = time.monotonic() + seconds
    while not done(value := read()):
        assert time.monotonic() < deadline, f"not done within {seconds} s: {value}"
        time.sleep(0.05)
    return value


def test_server_follows_a_rebuilt_index_and_requests_keep_their_own(
    tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(
        "一、抓党建\n各级党组织要认真落实“三会一课”制度，严肃党内政治生活。\n", encoding="utf-8"
    )
    settings = Settings(index_dir=tmp_path / "index", cache_dir=PROJECT_ROOT / "data" / "cache")
    build_index([docs / "a.txt"], settings, encoders, tokenizer)
    monkeypatch.setattr("service.live.RELOAD_CHECK_SECONDS", 0.05)
    with TestClient(create_app(settings, encoders, tokenizer)) as test_client:
        live = test_client.app.state.live
        assert test_client.get("/api/health").json()["documents"] == 1
        with live.lease() as before:  # what a request in flight holds
            (docs / "b.txt").write_text("二、抓医德医风\n加强医德医风建设，弘扬崇高职业精神。\n", encoding="utf-8")
            build_index(sorted(docs.glob("*.txt")), settings, encoders, tokenizer)
            health = wait_for(lambda: test_client.get("/api/health").json(), lambda h: h["documents"] == 2)
            assert health["index_version"] == (settings.index_dir / "CURRENT").read_text().strip() != before.version
            assert before.searcher.search("三会一课", top_k=1), "a request holding the old version still works"
        assert before.closed, "and its files are closed once it is done"


def test_ask_builds_its_generator_once_per_index_version(
    tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    party_building = "一、抓党建\n各级党组织要认真落实“三会一课”制度，严肃党内政治生活。\n"
    (docs / "a.txt").write_text(party_building, encoding="utf-8")
    settings = Settings(index_dir=tmp_path / "index", cache_dir=PROJECT_ROOT / "data" / "cache")
    build_index([docs / "a.txt"], settings, encoders, tokenizer)
    monkeypatch.setattr("service.live.RELOAD_CHECK_SECONDS", 0.05)
    built: list[Generator] = []
    build = Generator.__init__

    def counted(generator: Generator, *args: object) -> None:
        built.append(generator)
        build(generator, *args)

    monkeypatch.setattr(Generator, "__init__", counted)
    with TestClient(create_app(settings, encoders, tokenizer)) as test_client:

        def cited(question: str) -> list[str]:
            response = test_client.post("/api/ask", json={"question": question})
            assert response.status_code == 200, response.text
            return [citation["doc_id"] for citation in response.json()["citations"]]

        for _ in range(3):
            assert cited("怎样落实三会一课制度") == ["a"]
        assert len(built) == 1, "one generator for the served version, not one per request"
        (docs / "b.txt").write_text("二、抓医德医风\n加强医德医风建设，弘扬崇高职业精神。\n", encoding="utf-8")
        build_index(sorted(docs.glob("*.txt")), settings, encoders, tokenizer)
        wait_for(lambda: cited("如何加强医德医风建设"), lambda doc_ids: "b" in doc_ids)  # the watcher loads it
        for _ in range(2):
            assert "b" in cited("如何加强医德医风建设")
        assert len(built) == 2, "the next version gets its own, once"


def test_serve_without_an_index_exits_3_and_names_make_index(tmp_path: Path) -> None:
    env = {**os.environ, "DJQA_INDEX_DIR": str(tmp_path / "none"), "DJQA_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "service.cli", "serve", "--port", "1"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=60)
    assert result.returncode == 3 and "make index" in result.stderr and "Traceback" not in result.stderr
