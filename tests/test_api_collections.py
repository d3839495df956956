"""Collections over HTTP: upload into one, list and page documents by it, scope searches and answers to it."""

import shutil
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.embed import Encoders
from service.http.app import create_app
from service.tokenize import WordTokenizer
from tests.test_api_documents import KEY, WRITE, error_of, finished
from tests.test_collections import DISCIPLINE, HOSPITALS, LAWS

LAW_DOCS = {"纪律处分条例", "医疗机构管理办法"}


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, seed_settings: Settings, encoders: Encoders, tokenizer: WordTokenizer
) -> Iterator[TestClient]:
    """A private copy of the seed index with the two laws uploaded into 法律法规 (the upload is a test too)."""
    folder = tmp_path_factory.mktemp("collections-api")
    shutil.copytree(seed_settings.index_dir, folder / "index")
    settings = seed_settings.model_copy(
        update={"index_dir": folder / "index", "uploads_dir": folder / "uploads", "api_key": KEY}
    )
    with TestClient(create_app(settings, encoders, tokenizer), raise_server_exceptions=False) as test_client:
        files = [
            ("files", ("纪律处分条例.txt", DISCIPLINE.encode())),
            ("files", ("医疗机构管理办法.txt", HOSPITALS.encode())),
        ]
        response = test_client.post("/api/documents", files=files, data={"collection": f" {LAWS} "}, headers=WRITE)
        assert response.json()["collection"] == LAWS
        job = finished(test_client, response)
        assert job["state"] == "done" and job["status"] == 201 and job["collection"] == LAWS
        yield test_client


def search(client: TestClient, query: str, **body: object) -> list[dict]:
    response = client.post("/api/search", json={"query": query, "top_k": 10, **body})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_health_and_the_document_list_name_every_collection_with_counts(client: TestClient) -> None:
    collections = client.get("/api/health").json()["collections"]
    assert [(c["name"], c["documents"]) for c in collections] == [("default", 5), (LAWS, 2)]
    assert sum(c["passages"] for c in collections) == client.get("/api/health").json()["passages"]
    listing = client.get("/api/documents", params={"collection": LAWS}).json()
    assert {d["doc_id"] for d in listing["documents"]} == LAW_DOCS and listing["total"] == 2
    assert all(d["collection"] == LAWS for d in listing["documents"])
    assert listing["collections"] == collections


def test_the_document_list_is_searched_sorted_and_paged_by_the_server(client: TestClient) -> None:
    everything = client.get("/api/documents").json()
    assert everything["total"] == len(everything["documents"]) == 7 and everything["pages"] == 1
    first, second = (
        client.get("/api/documents", params={"sort": "-passages", "page": page, "page_size": 4}).json()
        for page in (1, 2)
    )
    assert (first["total"], first["pages"], len(first["documents"]), len(second["documents"])) == (7, 2, 4, 3)
    counts = [d["passages"] for d in first["documents"] + second["documents"]]
    assert counts == sorted(counts, reverse=True)
    newest = client.get("/api/documents", params={"sort": "-added", "page_size": 2}).json()["documents"]
    assert {d["doc_id"] for d in newest} == LAW_DOCS
    found = client.get("/api/documents", params={"q": "医疗机构"}).json()
    assert [d["doc_id"] for d in found["documents"]] == ["医疗机构管理办法"]
    assert client.get("/api/documents", params={"collection": "没有"}).json()["total"] == 0


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_a_scoped_search_returns_only_its_collection(client: TestClient, mode: str) -> None:
    unscoped = {r["doc_id"] for r in search(client, "党风廉政建设 红包", mode=mode)}
    assert unscoped & LAW_DOCS and unscoped - LAW_DOCS
    assert {r["doc_id"] for r in search(client, "党风廉政建设 红包", mode=mode, collections=[LAWS])} <= LAW_DOCS
    assert not {r["doc_id"] for r in search(client, "党风廉政建设 红包", mode=mode, collections=["default"])} & LAW_DOCS
    linked = client.get("/api/search", params={"q": "党风廉政建设 红包", "mode": mode, "collections": LAWS})
    assert {r["doc_id"] for r in linked.json()["results"]} <= LAW_DOCS


def test_a_scoped_answer_cites_only_its_collection(client: TestClient) -> None:
    scoped = client.post("/api/ask", json={"question": "医务人员收受红包怎么处理", "collections": [LAWS]}).json()
    assert scoped["citations"] and {c["doc_id"] for c in scoped["citations"]} <= LAW_DOCS
    seeds = client.post("/api/ask", json={"question": "医务人员收受红包怎么处理", "collections": ["default"]}).json()
    assert not {c["doc_id"] for c in seeds["citations"]} & LAW_DOCS


def test_bad_or_unknown_collections_are_clear_422s(client: TestClient) -> None:
    message = error_of(
        client.post("/api/search", json={"query": "党建", "collections": ["法规"]}), 422, "unknown_collection"
    )
    assert message == f"没有这些文档集：法规（现有：default、{LAWS}）"
    error_of(client.get("/api/search", params={"q": "党建", "collections": "法规"}), 422, "unknown_collection")
    error_of(client.post("/api/ask", json={"question": "党建", "collections": ["法规"]}), 422, "unknown_collection")
    stream = client.post("/api/ask", json={"question": "党建", "collections": ["法规"], "stream": True})
    error_of(stream, 422, "unknown_collection")
    for bad, words in (("", "不能为空"), ("x" * 33, "不能超过 32 个字符"), ("a b", "只能包含汉字")):
        assert words in error_of(
            client.post("/api/search", json={"query": "党建", "collections": [bad]}), 422, "invalid_collection"
        )
    assert "必须是列表" in error_of(
        client.post("/api/search", json={"query": "党建", "collections": LAWS}), 422, "invalid_parameter"
    )
    error_of(client.get("/api/documents", params={"collection": "a/b"}), 422, "invalid_collection")
    error_of(client.get("/api/documents", params={"sort": "size"}), 422, "invalid_parameter")
    error_of(client.get("/api/documents", params={"page_size": 201}), 422, "invalid_parameter")
    refused = client.post(
        "/api/documents", files=[("files", ("x.txt", "内容".encode()))], data={"collection": "../etc"}, headers=WRITE
    )
    assert "只能包含" in error_of(refused, 422, "invalid_collection")


def test_an_upload_without_a_collection_goes_to_default(client: TestClient) -> None:
    text = "药剂科党支部开展“合理用药进社区”活动，党员药师每月为居民讲解用药安全知识。\n"
    job = finished(
        client, client.post("/api/documents", files=[("files", ("药剂科.txt", text.encode()))], headers=WRITE)
    )
    assert job["collection"] == "default"
    assert {d["doc_id"]: d["collection"] for d in client.get("/api/documents").json()["documents"]}[
        "药剂科"
    ] == "default"
