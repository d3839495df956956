"""Generated answers against a scripted OpenAI-compatible server: the grounding check and every fallback."""

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.answer import Answerer
from service.config import Settings
from service.embed import Encoders
from service.generate import EXTRACT, GENERATE, Generator, ModelClient, build_messages
from service.grounding import GroundingChecker
from service.http.app import create_app
from service.search import Searcher
from service.text import sentence_spans
from service.tokenize import WordTokenizer
from tests.conftest import free_port
from tests.llm_stub import Reply, StubModelServer, passages_in, reply

QUESTION = "如何推动党建与医疗业务深度融合"
OFF_TOPIC = "红烧肉怎么做好吃"
KEY = "sk-test-secret-0123456789"
INVENTED = "卫健系统党委决定每年向每名党员发放一千元学习补贴，并在全省推广。"
TIMEOUT_S = 1.5


def statement(text: str) -> str:
    """The first sentence of a passage that states something (15+ characters)."""
    return next(text[s:e].strip() for s, e in sentence_spans(text) if len(text[s:e].strip()) >= 15)


def wrong_passage(passages: dict[int, str]) -> int:
    """A passage other than 【1】 whose first statement is not in 【1】."""
    return next(n for n in sorted(passages) if n != 1 and statement(passages[n]) not in passages[1])


@pytest.fixture(scope="module")
def stub() -> Iterator[StubModelServer]:
    server = StubModelServer().start()
    yield server
    server.stop()


def model_settings(seed_settings: Settings, url: str, **overrides: object) -> Settings:
    return seed_settings.model_copy(
        update={"llm_base_url": url, "llm_api_key": SecretStr(KEY), "llm_timeout_s": TIMEOUT_S, **overrides}
    )


@pytest.fixture
def generator(stub: StubModelServer, seed_settings: Settings, searcher: Searcher) -> Generator:
    client = ModelClient(model_settings(seed_settings, stub.url))
    return Generator(
        Answerer(searcher, seed_settings.answer_min_confidence), client, GroundingChecker(searcher.encoders)
    )


def extractive(searcher: Searcher, seed_settings: Settings) -> str:
    return Answerer(searcher, seed_settings.answer_min_confidence).answer(QUESTION).text


def test_grounded_answer_is_kept_with_citations_renumbered(generator: Generator, stub: StubModelServer) -> None:
    stub.script = lambda prompt: reply(statement(passages_in(prompt)[2]), "【2】")
    result = generator.ask(QUESTION)
    assert result.mode_used == GENERATE and result.fallback_code is None and result.removed_sentences == 0
    assert result.answer.text.endswith("【1】") and len(result.answer.citations) == 1
    assert statement(result.answer.citations[0].passage.text) in result.answer.text


def test_invented_sentence_is_removed(generator: Generator, stub: StubModelServer) -> None:
    stub.script = lambda prompt: reply(
        statement(passages_in(prompt)[1]), "【1】", INVENTED[:10], INVENTED[10:], "【1】"
    )
    result = generator.ask(QUESTION)
    assert result.mode_used == GENERATE and result.removed_sentences == 1
    assert INVENTED not in result.answer.text and result.answer.text.endswith("【1】")


def test_citation_to_a_passage_that_does_not_exist_is_removed(generator: Generator, stub: StubModelServer) -> None:
    def script(prompt: str) -> Reply:
        passages = passages_in(prompt)
        return reply(f"{statement(passages[1])}【1】", f"{statement(passages[2])}【{len(passages) + 4}】")

    stub.script = script
    result = generator.ask(QUESTION)
    assert result.mode_used == GENERATE and result.removed_sentences == 1 and "【2】" not in result.answer.text


def test_correct_sentence_citing_the_wrong_passage_is_removed(generator: Generator, stub: StubModelServer) -> None:
    seen: dict[str, str] = {}

    def script(prompt: str) -> Reply:
        passages = passages_in(prompt)
        seen["wrong"] = statement(passages[wrong_passage(passages)])
        return reply(f"{statement(passages[1])}【1】", f"{seen['wrong']}【1】")

    stub.script = script
    result = generator.ask(QUESTION)
    assert result.mode_used == GENERATE and result.removed_sentences == 1
    assert seen["wrong"] not in result.answer.text


def test_no_grounded_sentence_falls_back_to_the_extractive_answer(
    generator: Generator, stub: StubModelServer, searcher: Searcher, seed_settings: Settings
) -> None:
    stub.script = lambda prompt: reply(INVENTED, "【1】")
    result = generator.ask(QUESTION)
    assert result.mode_used == EXTRACT and result.fallback_code == "ungrounded" and result.removed_sentences == 1
    assert result.answer.found and result.answer.text == extractive(searcher, seed_settings)


FAILURES = {
    "http_500": (Reply(status=500), "llm_http_error"),
    "http_404": (Reply(status=404), "llm_http_error"),
    "stall_before_the_first_byte": (Reply(stall_before_s=TIMEOUT_S + 1.5), "llm_timeout"),
    "stall_within_the_stream": (reply("党建", "工作", stall_after=1, stall_s=TIMEOUT_S + 1.5), "llm_timeout"),
    "broken_stream": (reply("党建工作", broken=True), "llm_bad_stream"),
    "empty_answer": (reply(), "llm_empty"),
    "blank_answer": (reply("  ", "\n"), "llm_empty"),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_model_failure_gives_the_extractive_answer_with_its_reason(
    failure: str,
    generator: Generator,
    stub: StubModelServer,
    searcher: Searcher,
    seed_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    plan, code = FAILURES[failure]
    stub.script = lambda prompt: plan
    with caplog.at_level(logging.DEBUG):
        result = generator.ask(QUESTION)
    assert result.mode_used == EXTRACT and result.fallback_code == code and result.fallback_message
    assert result.answer.found and result.answer.text == extractive(searcher, seed_settings)
    assert code in caplog.text and KEY not in caplog.text


def test_unreachable_model_gives_the_extractive_answer(
    seed_settings: Settings, searcher: Searcher, caplog: pytest.LogCaptureFixture
) -> None:
    client = ModelClient(model_settings(seed_settings, f"http://127.0.0.1:{free_port()}/v1"))
    generator = Generator(Answerer(searcher, 0.5), client, GroundingChecker(searcher.encoders))
    with caplog.at_level(logging.DEBUG):
        result = generator.ask(QUESTION)
    assert result.mode_used == EXTRACT and result.fallback_code == "llm_unreachable" and result.answer.found
    assert KEY not in caplog.text


def test_off_topic_question_never_reaches_the_model(generator: Generator, stub: StubModelServer) -> None:
    before = len(stub.requests)
    result = generator.ask(OFF_TOPIC)
    assert not result.answer.found and result.mode_used == EXTRACT and len(stub.requests) == before


def test_key_is_sent_as_a_bearer_token(generator: Generator, stub: StubModelServer) -> None:
    stub.script = lambda prompt: reply(statement(passages_in(prompt)[1]), "【1】")
    generator.ask(QUESTION)
    assert stub.requests[-1]["headers"]["authorization"] == f"Bearer {KEY}"
    assert stub.requests[-1]["body"]["stream"] is True


def test_extract_mode_does_not_call_the_model(generator: Generator, stub: StubModelServer) -> None:
    before = len(stub.requests)
    result = generator.ask(QUESTION, mode=EXTRACT)
    assert result.mode_used == EXTRACT and result.fallback_code is None and len(stub.requests) == before


def test_without_a_model_generation_is_reported_unavailable(searcher: Searcher) -> None:
    generator = Generator(Answerer(searcher, 0.5), None, GroundingChecker(searcher.encoders))
    assert generator.ask(QUESTION).fallback_code is None
    assert generator.ask(QUESTION, mode=GENERATE).fallback_code == "llm_not_configured"


def test_prompt_numbers_passages_with_titles_within_the_budget(searcher: Searcher) -> None:
    hits = searcher.search(QUESTION, top_k=5)
    messages = build_messages(QUESTION, hits, budget=600)
    prompt = messages[-1]["content"]
    assert "只能依据" in messages[0]["content"] and "【n】" in messages[0]["content"]
    assert f"【1】《{hits[0].passage.title}》" in prompt and prompt.rstrip().endswith("每句末尾标注【n】。")
    assert sum(len(text) for text in passages_in(prompt).values()) <= 600 + 80 * len(hits)


# ---------- over HTTP ----------


@pytest.fixture(scope="module")
def client(
    stub: StubModelServer, seed_settings: Settings, encoders: Encoders, tokenizer: WordTokenizer
) -> Iterator[TestClient]:
    app = create_app(model_settings(seed_settings, stub.url), encoders, tokenizer)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def sse_events(response: httpx.Response) -> list[tuple[str, dict]]:
    events = []
    for block in response.text.split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.splitlines())
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_ask_reports_mode_used_and_removed_sentences(client: TestClient, stub: StubModelServer) -> None:
    stub.script = lambda prompt: reply(statement(passages_in(prompt)[1]), "【1】", INVENTED, "【1】")
    payload = client.post("/api/ask", json={"question": QUESTION}).json()
    assert payload["mode_used"] == "generate" and payload["removed_sentences"] == 1
    assert payload["fallback_reason"] is None and payload["found"] and len(payload["citations"]) == 1


def test_streamed_answer_sends_citations_deltas_then_the_checked_answer(
    client: TestClient, stub: StubModelServer
) -> None:
    stub.script = lambda prompt: reply(statement(passages_in(prompt)[1]), "【1】", INVENTED, "【1】")
    response = client.post("/api/ask", json={"question": QUESTION, "stream": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "citations" and kinds[-1] == "final" and set(kinds[1:-1]) == {"delta"}
    assert len(events[0][1]["citations"]) >= 2
    streamed = "".join(data["text"] for kind, data in events if kind == "delta")
    final = events[-1][1]
    assert INVENTED in streamed and INVENTED not in final["answer"] and final["removed_sentences"] == 1


def test_failed_model_over_http_is_a_200_with_the_reason(client: TestClient, stub: StubModelServer) -> None:
    stub.script = lambda prompt: Reply(status=500)
    response = client.post("/api/ask", json={"question": QUESTION, "mode": "generate"})
    payload = response.json()
    assert response.status_code == 200 and payload["mode_used"] == "extract" and payload["found"]
    assert payload["fallback_reason"]["code"] == "llm_http_error" and "摘编" in payload["fallback_reason"]["message"]


def test_config_says_generation_is_on_and_nothing_shows_the_key(client: TestClient) -> None:
    assert client.get("/api/config").json()["generation"] is True
    for path in ("/api/config", "/api/health", "/openapi.json"):
        assert KEY not in client.get(path).text
    assert client.post("/api/ask", json={"question": QUESTION, "mode": "write"}).status_code == 422


def test_a_lone_surrogate_from_the_model_is_checked_not_a_crash(generator: Generator, stub: StubModelServer) -> None:
    stub.script = lambda prompt: reply(statement(passages_in(prompt)[1]), "\ud800", "【1】")
    result = generator.ask(QUESTION)
    assert result.answer.found and "\ud800" not in result.answer.text
    result.answer.text.encode("utf-8")  # a valid string all the way to the response
