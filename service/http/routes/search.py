"""Search and ask: validate the question, call the core, shape the answer.

A refused question (/api/ask found nothing) is logged; the question's text only with
DJQA_LOG_QUESTIONS=true, as is every searched question then.
"""

import json
import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from service.answer import NOT_FOUND, Answer
from service.collections import checked_scope
from service.config import DEFAULT_MODE, Settings
from service.generate import FALLBACKS, AskResult, Event
from service.http.deps import (
    GeneratorDep,
    SettingsDep,
    SnapshotDep,
    checked_query,
    require_read_key,
)
from service.http.errors import ERROR_RESPONSES, JsonBodyRoute
from service.http.schemas import (
    EXAMPLE_QUERY,
    MAX_SCOPE,
    SCOPE_HELP,
    AskFields,
    AskResponse,
    ErrorDetail,
    Mode,
    SearchFields,
    SearchResponse,
    SearchResult,
    query_length,
    request_models,
)
from service.question_log import Entry
from service.records import Hit
from service.search import Filters, result_row, search_response

logger = logging.getLogger("dangjian_qa")


def log_question(kind: str, question: str, settings: Settings) -> None:
    """The question's text, only when settings.log_questions asks for it."""
    if settings.log_questions:
        logger.info("%s：%s", kind, question, extra={"question": question})


def log_refusal(result: AskResult) -> None:
    if not result.answer.found:
        confidence = round(result.answer.confidence, 4)
        logger.info("问答未找到相关内容，未作回答（置信度 %.3f）", confidence, extra={"confidence": confidence})


OUT_OF_SCOPE = "管理员已确认现有文件中没有这个问题的答案。" + NOT_FOUND.split("。", 1)[1]


def log_search(request: Request, query: str, mode: str, filters: Filters, response: dict) -> None:
    """Queue the search for the question log (when it is on); never waits, never fails the search."""
    log = request.app.state.question_log
    if log is not None:
        passage_ids = [row["passage_id"] for row in response["results"]]
        log.record(Entry(query, "search", mode, scope_of(filters), passage_ids, response["took_ms"]))


def scope_of(filters: Filters) -> dict[str, object]:
    """The filters a search was restricted by, as the log keeps them (JSON)."""
    scope: dict[str, object] = {
        "doc_ids": None if filters.doc_ids is None else sorted(filters.doc_ids),
        "doc_type": filters.doc_type,
        "year": filters.year,
        "collections": None if filters.collections is None else sorted(filters.collections),
    }
    return {name: value for name, value in scope.items() if value is not None}


def log_ask(request: Request, question: str, filters: Filters, result: AskResult, started: float) -> None:
    """Queue the question and its answer for the question log (when it is on), like log_search."""
    log = request.app.state.question_log
    if log is not None:
        answer = result.answer
        passage_ids = [hit.passage.passage_id for hit in answer.citations]
        latency = round((time.perf_counter() - started) * 1000, 1)
        confidence = round(answer.confidence, 4)
        scope = scope_of(filters)
        log.record(Entry(question, "ask", result.mode_used, scope, passage_ids, latency, answer.found, confidence))


def out_of_scope(request: Request, question: str) -> AskResult | None:
    """The refusal of a question the administrator marked 「文件中没有」 (or a close paraphrase of one)."""
    log, encoders = request.app.state.question_log, request.app.state.live.encoders

    def vectors_of(text: str) -> dict:  # the encoders' query cache keeps them for the search that follows
        return {name: encoder.encode_query(text) for name, encoder in encoders.items()}

    try:
        if log is None or log.out_of_scope(question, vectors_of) is None:
            return None
    except sqlite3.Error:  # a broken log file must not fail the question: it is answered as usual
        logger.exception("问题日志无法读取")
        return None
    return AskResult(Answer(found=False, text=OUT_OF_SCOPE, confidence=0.0, citations=()), "extract")


def search_routers(settings: Settings) -> list[APIRouter]:
    """POST/GET /api/search and POST /api/ask, with the limits of `settings` in their schemas."""
    models = request_models(settings)
    SearchRequest, AskRequest = models.search, models.ask
    read_key = [Depends(require_read_key)]
    json_routes = APIRouter(route_class=JsonBodyRoute, prefix="/api", responses=ERROR_RESPONSES, dependencies=read_key)
    query_routes = APIRouter(prefix="/api", dependencies=read_key)

    @json_routes.post("/search", summary="检索段落", response_model=SearchResponse)
    def search_post(
        body: SearchRequest,  # type: ignore[valid-type]
        request: Request,
        snapshot: SnapshotDep,
        settings: SettingsDep,
    ) -> SearchResponse:
        """按问题检索最相关的段落，可限定文档集（collections），可按文档、类型、年份过滤。"""
        fields = cast(SearchFields, body)  # SearchRequest is made per app, so the type checker knows its base
        doc_ids = None if fields.doc_ids is None else frozenset(fields.doc_ids)
        query = checked_query(fields.query, settings)
        scope = checked_scope(fields.collections)  # 422 invalid_collection; unknown ones: the searcher's 422
        filters = Filters(doc_ids=doc_ids, doc_type=fields.doc_type, year=fields.year, collections=scope)
        log_question("检索", query, settings)
        response = search_response(snapshot.searcher, query, fields.top_k, fields.mode, filters)
        log_search(request, query, fields.mode, filters, response)
        return SearchResponse(**response)

    @query_routes.get("/search", summary="检索段落（GET）", response_model=SearchResponse, responses=ERROR_RESPONSES)
    def search_get(
        request: Request,
        snapshot: SnapshotDep,
        settings: SettingsDep,
        q: Annotated[
            str,
            Query(
                description=f"问题或关键词，不超过 {settings.max_query_chars} 字",
                examples=[EXAMPLE_QUERY],
                json_schema_extra=query_length(settings),
            ),
        ],
        top_k: Annotated[
            int, Query(ge=1, le=settings.max_top_k, description=f"返回条数，1 到 {settings.max_top_k}")
        ] = settings.default_top_k,
        mode: Annotated[Mode, Query(description="检索方式：hybrid、dense、lexical")] = DEFAULT_MODE,
        doc_type: Annotated[str | None, Query(description="只检索此类型的文档")] = None,
        year: Annotated[int | None, Query(description="只检索此年份的文档")] = None,
        collections: Annotated[
            list[str] | None,
            Query(max_length=MAX_SCOPE, description=f"{SCOPE_HELP}；可重复：collections=a&collections=b"),
        ] = None,
    ) -> SearchResponse:
        """与 POST /api/search 相同，参数放在查询串中，便于分享链接。"""
        query = checked_query(q, settings)
        filters = Filters(doc_type=doc_type, year=year, collections=checked_scope(collections))
        log_question("检索", query, settings)
        response = search_response(snapshot.searcher, query, top_k, mode, filters)
        log_search(request, query, mode, filters, response)
        return SearchResponse(**response)

    @json_routes.post(
        "/ask",
        summary="问答：生成或摘编答案并标注出处",
        response_model=AskResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "stream 为 true 时的事件流"}},
    )
    def ask(body: AskRequest, request: Request, snapshot: SnapshotDep, settings: SettingsDep, generator: GeneratorDep):  # type: ignore[valid-type]
        """回答问题，每句后以 【n】 标注出处；无相关内容时 found 为 false。已配置语言模型时默认由模型依据检索到的
        段落生成答案，并删去无法在所引段落中核实的句子；模型不可用时改用摘编答案并说明原因（fallback_reason）。"""
        started = time.perf_counter()
        fields = cast(AskFields, body)  # AskRequest is made per app, so the type checker knows its base
        question = checked_query(fields.question, settings)
        filters = Filters(collections=checked_scope(fields.collections))
        snapshot.searcher.scope(filters.collections)  # an unknown collection: 422 before a stream starts
        log_question("问答", question, settings)
        documents = snapshot.searcher.store.documents
        refusal = out_of_scope(request, question)

        def citation_rows(hits: Sequence[Hit]) -> list[SearchResult]:
            return [
                SearchResult(**result_row(n, hit, documents.get(hit.passage.doc_id)))
                for n, hit in enumerate(hits, start=1)
            ]

        def response(result: AskResult) -> AskResponse:
            log_refusal(result)
            answer = result.answer
            code = result.fallback_code
            reason = ErrorDetail(code=code, message=FALLBACKS[code]) if code else None
            return AskResponse(
                question=question,
                found=answer.found,
                answer=answer.text,
                confidence=round(answer.confidence, 4),
                citations=citation_rows(answer.citations),
                mode_used=result.mode_used,
                fallback_reason=reason,
                removed_sentences=result.removed_sentences,
            )

        if not fields.stream:
            result = refusal or generator.ask(question, fields.top_k, fields.mode, filters)
            log_ask(request, question, filters, result, started)
            return response(result)

        def sse() -> Iterator[str]:
            final = [Event("final", result=refusal)] if refusal else None
            events = final or generator.events(question, fields.top_k, fields.mode, filters)
            for event in events:
                data: dict[str, Any]
                if event.kind == "citations":
                    data = {"citations": [row.model_dump() for row in citation_rows(event.citations)]}
                elif event.kind == "delta":
                    data = {"text": event.text}
                else:
                    assert event.result is not None  # the final event carries the result
                    log_ask(request, question, filters, event.result, started)
                    data = response(event.result).model_dump()
                yield f"event: {event.kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return [json_routes, query_routes]
