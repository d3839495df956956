"""Hostile and unusual requests: huge integers, deep nesting, lone surrogates, float top_k, OPTIONS,
the schema's declared bounds, security headers. None of them is a 500."""

import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.embed import Encoders
from service.http.app import create_app
from service.tokenize import WordTokenizer

HUGE = "1" + "0" * 5000  # past Python's 4300-digit limit for int(str)
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(seed_settings: Settings, encoders: Encoders, tokenizer: WordTokenizer) -> Iterator[TestClient]:
    with TestClient(create_app(seed_settings, encoders, tokenizer), raise_server_exceptions=False) as test_client:
        yield test_client


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert re.search(r"[\u4e00-\u9fff]", error["message"]), "messages are Chinese"
    return error["code"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/search", '{"query": "党建", "top_k": ' + HUGE + "}"),
        ("/api/search", '{"query": "党建", "year": ' + HUGE + "}"),
        ("/api/ask", '{"question": "党建", "top_k": ' + HUGE + "}"),
    ],
)
def test_integer_of_thousands_of_digits_is_400(client: TestClient, path: str, body: str) -> None:
    response = client.post(path, content=body, headers=JSON)
    assert error_code(response, 400) == "invalid_json"
    assert "4300" in response.json()["error"]["message"]


@pytest.mark.parametrize("parameter", ["top_k", "year"])
def test_integer_of_thousands_of_digits_in_a_get_is_422(client: TestClient, parameter: str) -> None:
    response = client.get("/api/search", params={"q": "党建", parameter: HUGE})
    assert error_code(response, 422) == "invalid_parameter"
    assert "过大" in response.json()["error"]["message"]


@pytest.mark.parametrize("depth", [40, 1000, 100_000])
@pytest.mark.parametrize("path", ["/api/search", "/api/ask"])
def test_deeply_nested_json_is_400(client: TestClient, path: str, depth: int) -> None:
    body = '{"query": "党建", "question": "党建", "top_k": ' + "[" * depth + "]" * depth + "}"
    response = client.post(path, content=body, headers=JSON)
    assert error_code(response, 400) == "invalid_json"
    assert "嵌套" in response.json()["error"]["message"]


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
@pytest.mark.parametrize("text", ["\\ud800", "党建\\udfff工作", "\\udc00\\ud800"])
def test_lone_surrogate_in_the_question_is_400_in_every_mode(client: TestClient, mode: str, text: str) -> None:
    response = client.post("/api/search", content=f'{{"query": "{text}", "mode": "{mode}"}}', headers=JSON)
    assert error_code(response, 400) == "invalid_encoding"
    assert "代理项" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    ['{"question": "\\ud800"}', '{"question": "党建", "extra": {"\\ud800": 1}}'],
)
def test_lone_surrogate_in_ask_is_400(client: TestClient, body: str) -> None:
    assert error_code(client.post("/api/ask", content=body, headers=JSON), 400) == "invalid_encoding"


def test_a_proper_surrogate_pair_is_an_ordinary_character(client: TestClient) -> None:
    response = client.post("/api/search", content='{"query": "党建\\ud83d\\ude00"}', headers=JSON)
    assert response.status_code == 200 and response.json()["query"] == "党建😀"


@pytest.mark.parametrize("query", ["？？？！！", "……", "😀😀", "\u200b\ufeff", "\x00\x07"])
def test_a_question_with_nothing_to_search_by_is_400(client: TestClient, query: str) -> None:
    # Punctuation, emoji or invisible characters alone used to rank every passage, the top at 1.0.
    for response in (
        client.post("/api/search", json={"query": query}),
        client.post("/api/ask", json={"question": query}),
        client.get("/api/search", params={"q": query}),
    ):
        assert error_code(response, 400) == "empty_query"


def test_invisible_characters_in_a_question_are_dropped(client: TestClient) -> None:
    plain = client.post("/api/search", json={"query": "党员发展工作"}).json()
    pasted = client.post("/api/search", json={"query": "\ufeff党员\u200b发展\x00工作\n"}).json()
    assert pasted["query"] == "党员发展工作"
    assert [row["passage_id"] for row in pasted["results"]] == [row["passage_id"] for row in plain["results"]]


@pytest.mark.parametrize("raw", ["q=%ED%A0%80", "q=%FF%FE", "q=%E5%85", "q=党建&doc_type=%C0"])
def test_a_query_string_that_is_not_utf8_is_400(client: TestClient, raw: str) -> None:
    # Starlette would read these as U+FFFD and search for it; a JSON body with them is refused too.
    response = client.get(f"/api/search?{raw}")
    assert error_code(response, 400) == "invalid_encoding"


@pytest.mark.parametrize(
    "url", ["/api/documents?q=%ED%BF%BF", "/api/documents/%FF", "/api/passages/%ED%A0%80/questions", "/api/jobs/%C0"]
)
def test_every_api_route_refuses_a_query_string_or_path_that_is_not_utf8(client: TestClient, url: str) -> None:
    assert error_code(client.get(url), 400) == "invalid_encoding"


def test_top_k_written_as_a_whole_float_is_accepted(client: TestClient) -> None:
    assert len(client.post("/api/search", json={"query": "党建", "top_k": 3.0}).json()["results"]) == 3
    assert client.post("/api/ask", json={"question": "党建", "top_k": 2.0}).status_code == 200
    assert client.post("/api/search", json={"query": "党建", "year": 2023.0}).status_code == 200
    for wrong in (2.5, True, "3", 51.0):
        response = client.post("/api/search", json={"query": "党建", "top_k": wrong})
        assert error_code(response, 422) == "invalid_parameter"


def test_schema_declares_the_question_length_and_the_errors_stay_400(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for model, field in (("SearchRequest", "query"), ("AskRequest", "question")):
        assert (
            schemas[model]["properties"][field] | {"minLength": 1, "maxLength": 500}
            == schemas[model]["properties"][field]
        )
    q = next(p for p in spec["paths"]["/api/search"]["get"]["parameters"] if p["name"] == "q")
    assert q["schema"]["minLength"] == 1 and q["schema"]["maxLength"] == 500
    assert error_code(client.post("/api/search", json={"query": ""}), 400) == "empty_query"
    assert error_code(client.post("/api/ask", json={"question": "党" * 501}), 400) == "query_too_long"
    assert error_code(client.get("/api/search", params={"q": "党" * 501}), 400) == "query_too_long"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/search", "GET, POST, OPTIONS"),
        ("/api/documents", "GET, POST, OPTIONS"),
        ("/api/documents/any", "GET, DELETE, OPTIONS"),
        ("/api/ask", "POST, OPTIONS"),
    ],
)
def test_options_and_405_list_every_allowed_method(client: TestClient, path: str, allowed: str) -> None:
    response = client.options(path)
    assert response.status_code == 204 and response.headers["allow"] == allowed
    wrong = client.patch(path)
    assert error_code(wrong, 405) == "method_not_allowed" and wrong.headers["allow"] == allowed
    assert allowed in wrong.json()["error"]["message"]


def test_write_key_is_a_security_scheme_of_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["BearerKey"]["scheme"] == "bearer" and schemes["ApiKeyHeader"]["name"] == "X-API-Key"
    for path, method in (("/api/documents", "post"), ("/api/documents/{doc_id}", "delete")):
        assert spec["paths"][path][method]["security"] == [{"BearerKey": []}, {"ApiKeyHeader": []}]
    assert "security" not in spec["paths"]["/api/search"]["post"]


@pytest.mark.parametrize("path", ["/", "/docs", "/api/health", "/static/app.js", "/api/nothing", "/openapi.json"])
def test_every_response_carries_the_security_headers(client: TestClient, path: str) -> None:
    headers = client.get(path).headers
    policy = headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"


def test_docs_page_and_its_assets_are_local(client: TestClient) -> None:
    page = client.get("/docs").text
    assert "http://" not in page and "https://" not in page and "<script>" not in page
    for asset in re.findall(r'(?:src|href)="(/[^"]+)"', page):
        assert client.get(asset).status_code == 200, asset
    assert client.get("/redoc").status_code == 404


def test_get_search_requires_q_as_its_schema_says(client: TestClient) -> None:
    q = next(
        p for p in client.get("/openapi.json").json()["paths"]["/api/search"]["get"]["parameters"] if p["name"] == "q"
    )
    assert q["required"] is True
    response = client.get("/api/search", params={"mode": "hybrid"})
    assert error_code(response, 422) == "invalid_parameter" and "（q）" in response.json()["error"]["message"]
    assert error_code(client.get("/api/search", params={"q": " "}), 400) == "empty_query"
