"""Generated answers: the organisation's own OpenAI-compatible model writes the answer from the passages.

    question → gate (answer.Answerer: an off-topic question never reaches the model)
             → passages 【1】…【n】 trimmed to the context budget → Chinese prompt → streamed model text
             → grounding check (service/grounding.py) → the checked answer, or the extractive one

Every failure of the model (unreachable, timeout, HTTP error, a stream that cannot be read, an empty
answer, an answer of which no sentence survives the check) gives the extractive answer with a
fallback reason; nothing here raises to the caller. The API key is never logged.
"""

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import httpx2  # the HTTP client of openai>=3 (its own fork of httpx)
import openai

from service.answer import Answer, Answerer, QueryVectors, not_found
from service.config import Settings
from service.grounding import CheckedAnswer, GroundingChecker
from service.records import Hit
from service.stores import Filters
from service.text import sentence_spans

logger = logging.getLogger("dangjian_qa")

GENERATE, EXTRACT = "generate", "extract"
CONNECT_TIMEOUT_S = 5.0  # a model server that does not accept a connection in this time is down
MIN_PASSAGE_CHARS = 80  # a passage cut shorter than this to fit the budget is left out instead
# Reasons for answering extractively when generation was asked for: code → what the page shows.
FALLBACKS = {
    "llm_not_configured": "未配置语言模型，以下为摘编答案。",
    "llm_unreachable": "无法连接语言模型，以下为摘编答案。",
    "llm_timeout": "语言模型响应超时，以下为摘编答案。",
    "llm_http_error": "语言模型返回错误，以下为摘编答案。",
    "llm_bad_stream": "语言模型返回的数据无法解析，以下为摘编答案。",
    "llm_empty": "语言模型没有给出答案，以下为摘编答案。",
    "ungrounded": "生成的答案没有能在原文中核实的句子，以下为摘编答案。",
}

SYSTEM_PROMPT = (
    "你是卫健系统党建文献的问答助手。只能依据用户给出的编号资料回答问题，不得使用资料以外的知识，不得编造。"
    "每一句话的句末都必须用【n】标注该句所依据的资料编号，例如：……要把党建工作融入医疗业务全过程【1】。"
    "涉及方针政策、制度名称、固定提法等正式表述时，照用资料原文的措辞。"
    "如果资料没有涉及这个问题，只回答：资料中没有相关内容。"
    "回答简明扼要，不超过五句话。"
)


@dataclass(frozen=True)
class AskResult:
    """What /api/ask answers: the answer, what produced it, and why generation was not used."""

    answer: Answer
    mode_used: str  # generate or extract: what really produced the text
    fallback_code: str | None = None
    removed_sentences: int = 0

    @property
    def fallback_message(self) -> str | None:
        return FALLBACKS.get(self.fallback_code) if self.fallback_code else None


@dataclass(frozen=True)
class Event:
    """One step of a streamed answer: the passages (citations), a text delta, or the final result."""

    kind: str  # citations, delta, final
    citations: tuple[Hit, ...] = ()
    text: str = ""
    result: AskResult | None = None


class ModelFailure(Exception):
    """The model did not give a usable stream; `code` is a key of FALLBACKS."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


class ModelClient:
    """Streams chat completions from an OpenAI-compatible server (the openai client parses the SSE)."""

    def __init__(self, settings: Settings) -> None:
        self.model = settings.llm_model
        self.max_tokens = settings.llm_max_tokens
        self.timeout_s = settings.llm_timeout_s
        self.context_chars = settings.llm_context_chars
        self.secret = settings.llm_api_key.get_secret_value() if settings.llm_api_key else ""
        self.client = openai.OpenAI(
            base_url=settings.llm_base_url,
            api_key=self.secret or "unused",  # servers without keys ignore it; the client insists on one
            timeout=openai.Timeout(self.timeout_s, connect=min(CONNECT_TIMEOUT_S, self.timeout_s)),
            max_retries=0,  # a retry would double the wait; the extractive answer is the fallback
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> "ModelClient | None":
        return cls(settings) if settings.generation_configured else None

    def deltas(self, messages: list[dict[str, str]]) -> Iterator[str]:
        """The answer's text pieces as the model writes them; ModelFailure on any failure."""
        deadline = time.monotonic() + self.timeout_s
        try:
            stream = self.client.chat.completions.create(
                model=self.model, messages=messages, stream=True, max_tokens=self.max_tokens, temperature=0.0
            )
            with stream:
                for chunk in stream:
                    if time.monotonic() > deadline:
                        raise ModelFailure("llm_timeout", f"over {self.timeout_s:g} s")
                    if not chunk.choices:
                        continue
                    content = chunk.choices[0].delta.content
                    if content:
                        # A lone surrogate (an escape split across chunks) would break every later
                        # encode: the model's text is made valid UTF-8 here, once.
                        yield content.encode("utf-8", "replace").decode("utf-8")
        except ModelFailure:
            raise
        except (openai.APITimeoutError, httpx2.TimeoutException) as error:  # a stall before or within the stream
            raise ModelFailure("llm_timeout", type(error).__name__) from None
        except openai.APIConnectionError as error:
            raise ModelFailure("llm_unreachable", type(error).__name__) from None
        except openai.APIStatusError as error:
            raise ModelFailure("llm_http_error", f"HTTP {error.status_code}") from None
        except Exception as error:  # a stream cut short or not JSON: httpx, json and openai errors alike
            raise ModelFailure("llm_bad_stream", type(error).__name__) from None


def passage_heading(number: int, hit: Hit) -> str:
    path = " › ".join(hit.passage.section_path)
    return f"【{number}】《{hit.passage.title}》" + (f"（{path}）" if path else "")


def trimmed(text: str, limit: int) -> str:
    """The text cut at the last sentence end within `limit` characters (mid-sentence when none)."""
    if len(text) <= limit:
        return text
    ends = [end for _, end in sentence_spans(text) if end <= limit]
    return text[: ends[-1]] if ends else text[:limit]


def fit_passages(hits: Sequence[Hit], budget: int) -> list[Hit]:
    """The hits, best first, whose text fits the budget of characters (the first always, cut to fit)."""
    kept, used = [], 0
    for hit in hits:
        room = budget - used
        if kept and room < MIN_PASSAGE_CHARS:
            break
        kept.append(hit)
        used += min(len(hit.passage.text), room)
    return kept


def build_messages(question: str, hits: Sequence[Hit], budget: int) -> list[dict[str, str]]:
    """The Chinese prompt: numbered passages with title and section path, trimmed to the budget, then the question."""
    blocks, used = [], 0
    for number, hit in enumerate(hits, start=1):
        text = trimmed(hit.passage.text, max(MIN_PASSAGE_CHARS, budget - used))
        used += len(text)
        blocks.append(f"{passage_heading(number, hit)}\n{text}")
    user = "资料：\n\n" + "\n\n".join(blocks) + f"\n\n问题：{question}\n请依据以上资料回答，每句末尾标注【n】。"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def renumbered(checked: CheckedAnswer, hits: Sequence[Hit]) -> tuple[str, tuple[Hit, ...]]:
    """The kept sentences with their marks renumbered in order of first citation, and those passages."""
    order: list[int] = []
    pieces = []
    for sentence in checked.sentences:
        if not sentence.kept:
            continue
        order += [n for n in sentence.citations if n not in order]
        pieces.append(sentence.text + "".join(f"【{order.index(n) + 1}】" for n in sentence.citations))
    return "".join(pieces), tuple(hits[n - 1] for n in order)


def redacted(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


class Generator:
    """Answers a question by generation (when a model client is given) or extraction, as events."""

    def __init__(self, answerer: Answerer, client: ModelClient | None, checker: GroundingChecker) -> None:
        self.answerer = answerer
        self.client = client
        self.checker = checker

    def ask(self, question: str, top_k: int = 5, mode: str | None = None, filters: Filters = Filters()) -> AskResult:
        """The final result of `events`, for a caller that does not stream."""
        final = [event for event in self.events(question, top_k, mode, filters) if event.kind == "final"]
        assert final[0].result is not None
        return final[0].result

    def events(
        self, question: str, top_k: int = 5, mode: str | None = None, filters: Filters = Filters()
    ) -> Iterator[Event]:
        """citations, then text deltas, then the final (checked) result; mode None: generate when configured.
        `filters` scope the search (collections) as in Searcher.search."""
        mode = mode or (GENERATE if self.client else EXTRACT)
        query_vectors = self.answerer.searcher.query_vectors(question)  # once: the gate and extraction share it
        hits, score = self.answerer.gated_hits(question, top_k, query_vectors, filters)
        if not hits:  # off-topic: the model is never called
            yield Event("citations")
            yield Event("final", result=AskResult(not_found(score), EXTRACT))
            return
        if mode == EXTRACT or self.client is None:
            code = None if mode == EXTRACT else "llm_not_configured"
            yield from self.extracted(question, hits, score, code, query_vectors, filters)
            return
        passages = fit_passages(hits, self.client.context_chars)
        yield Event("citations", citations=tuple(passages))
        pieces: list[str] = []
        started = time.monotonic()
        try:
            for delta in self.client.deltas(build_messages(question, passages, self.client.context_chars)):
                pieces.append(delta)
                yield Event("delta", text=delta)
        except ModelFailure as failure:
            detail = redacted(failure.detail, self.client.secret)
            logger.warning("语言模型不可用（%s：%s），改用摘编答案", failure.code, detail)
            yield self.fallback(question, hits, score, failure.code, query_vectors=query_vectors, filters=filters)
            return
        text = "".join(pieces)
        if not text.strip():
            logger.warning("语言模型没有给出答案（llm_empty），改用摘编答案")
            yield self.fallback(question, hits, score, "llm_empty", query_vectors=query_vectors, filters=filters)
            return
        checked = self.checker.check(text, [hit.passage for hit in passages])
        seconds = time.monotonic() - started
        if checked.kept == 0:
            logger.info("生成答案的 %d 句均未通过核验（ungrounded，%.1f 秒），改用摘编答案", checked.removed, seconds)
            yield self.fallback(question, hits, score, "ungrounded", checked.removed, query_vectors, filters)
            return
        answer_text, citations = renumbered(checked, passages)
        answer = Answer(found=True, text=answer_text, confidence=score, citations=citations)
        yield Event("final", result=AskResult(answer, GENERATE, None, checked.removed))

    def extracted(
        self,
        question: str,
        hits: list[Hit],
        score: float,
        code: str | None,
        query_vectors: QueryVectors,
        filters: Filters = Filters(),
    ) -> Iterator[Event]:
        answer = self.answerer.extract(question, hits, score, query_vectors, filters)
        yield Event("citations", citations=answer.citations)
        yield Event("delta", text=answer.text)
        yield Event("final", result=AskResult(answer, EXTRACT, code))

    def fallback(
        self,
        question: str,
        hits: list[Hit],
        score: float,
        code: str,
        removed: int = 0,
        query_vectors: QueryVectors | None = None,
        filters: Filters = Filters(),
    ) -> Event:
        answer = self.answerer.extract(question, hits, score, query_vectors, filters)
        return Event("final", result=AskResult(answer, EXTRACT, code, removed))
