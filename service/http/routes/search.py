"""Search and ask: validate the question, call the core, shape the answer."""

import json
from collections.abc import Iterator, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from service.collections import checked_scope
from service.config import DEFAULT_MODE, Settings
from service.generate import AskResult
from service.http.deps import (
    GeneratorDep,
    SettingsDep,
    SnapshotDep,
    checked_query,
    require_read_key,
    utf8_query_string,
)
from service.http.errors import ERROR_RESPONSES, JsonBodyRoute
from service.http.schemas import (
    EXAMPLE_QUERY,
    MAX_SCOPE,
    SCOPE_HELP,
    AskResponse,
    ErrorDetail,
    Mode,
    SearchResponse,
    SearchResult,
    query_length,
    request_models,
)
from service.records import Hit
from service.search import Filters, result_row, search_response


def search_routers(settings: Settings) -> list[APIRouter]:
    """POST/GET /api/search and POST /api/ask, with the limits of `settings` in their schemas."""
    models = request_models(settings)
    SearchRequest, AskRequest = models.search, models.ask
    read_key = [Depends(require_read_key)]
    json_routes = APIRouter(route_class=JsonBodyRoute, prefix="/api", responses=ERROR_RESPONSES, dependencies=read_key)
    query_routes = APIRouter(prefix="/api", dependencies=[*read_key, Depends(utf8_query_string)])

    @json_routes.post("/search", summary="检索段落", response_model=SearchResponse)
    def search_post(body: SearchRequest, snapshot: SnapshotDep, settings: SettingsDep) -> SearchResponse:  # type: ignore[valid-type]
        """按问题检索最相关的段落，可限定文档集（collections），可按文档、类型、年份过滤。"""
        doc_ids = None if body.doc_ids is None else frozenset(body.doc_ids)
        query = checked_query(body.query, settings)
        scope = checked_scope(body.collections)  # 422 invalid_collection; unknown ones: the searcher's 422
        filters = Filters(doc_ids=doc_ids, doc_type=body.doc_type, year=body.year, collections=scope)
        return SearchResponse(**search_response(snapshot.searcher, query, body.top_k, body.mode, filters))

    @query_routes.get("/search", summary="检索段落（GET）", response_model=SearchResponse, responses=ERROR_RESPONSES)
    def search_get(
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
        return SearchResponse(**search_response(snapshot.searcher, query, top_k, mode, filters))

    @json_routes.post(
        "/ask",
        summary="问答：生成或摘编答案并标注出处",
        response_model=AskResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "stream 为 true 时的事件流"}},
    )
    def ask(body: AskRequest, snapshot: SnapshotDep, settings: SettingsDep, generator: GeneratorDep):  # type: ignore[valid-type]
        """回答问题，每句后以 【n】 标注出处；无相关内容时 found 为 false。已配置语言模型时默认由模型依据检索到的
        段落生成答案，并删去无法在所引段落中核实的句子；模型不可用时改用摘编答案并说明原因（fallback_reason）。"""
        question = checked_query(body.question, settings)
        filters = Filters(collections=checked_scope(body.collections))
        snapshot.searcher.scope(filters.collections)  # an unknown collection: 422 before a stream starts
        documents = snapshot.searcher.store.documents

        def citation_rows(hits: Sequence[Hit]) -> list[SearchResult]:
            return [
                SearchResult(**result_row(n, hit, documents.get(hit.passage.doc_id)))
                for n, hit in enumerate(hits, start=1)
            ]

        def response(result: AskResult) -> AskResponse:
            answer = result.answer
            reason = result.fallback_code and ErrorDetail(code=result.fallback_code, message=result.fallback_message)
            return AskResponse(
                question=question,
                found=answer.found,
                answer=answer.text,
                confidence=round(answer.confidence, 4),
                citations=citation_rows(answer.citations),
                mode_used=result.mode_used,
                fallback_reason=reason or None,
                removed_sentences=result.removed_sentences,
            )

        if not body.stream:
            return response(generator.ask(question, body.top_k, body.mode, filters))

        def sse() -> Iterator[str]:
            for event in generator.events(question, body.top_k, body.mode, filters):
                if event.kind == "citations":
                    data = {"citations": [row.model_dump() for row in citation_rows(event.citations)]}
                elif event.kind == "delta":
                    data = {"text": event.text}
                else:
                    data = response(event.result).model_dump()
                yield f"event: {event.kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return [json_routes, query_routes]
