"""Search and ask: validate the question, call the core, shape the answer."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.config import DEFAULT_MODE, Settings
from service.http.deps import SettingsDep, SnapshotDep, checked_query, require_read_key
from service.http.errors import ERROR_RESPONSES, JsonBodyRoute
from service.http.schemas import (
    EXAMPLE_QUERY,
    AskResponse,
    Mode,
    SearchResponse,
    SearchResult,
    query_length,
    request_models,
)
from service.search import Filters, result_row, search_response


def search_routers(settings: Settings) -> list[APIRouter]:
    """POST/GET /api/search and POST /api/ask, with the limits of `settings` in their schemas."""
    models = request_models(settings)
    SearchRequest, AskRequest = models.search, models.ask
    read_key = [Depends(require_read_key)]
    json_routes = APIRouter(route_class=JsonBodyRoute, prefix="/api", responses=ERROR_RESPONSES, dependencies=read_key)
    query_routes = APIRouter(prefix="/api", dependencies=read_key)

    @json_routes.post("/search", summary="检索段落", response_model=SearchResponse)
    def search_post(body: SearchRequest, snapshot: SnapshotDep, settings: SettingsDep) -> SearchResponse:  # type: ignore[valid-type]
        """按问题检索最相关的段落，可按文档、类型、年份过滤。"""
        doc_ids = None if body.doc_ids is None else frozenset(body.doc_ids)
        filters = Filters(doc_ids=doc_ids, doc_type=body.doc_type, year=body.year)
        query = checked_query(body.query, settings)
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
    ) -> SearchResponse:
        """与 POST /api/search 相同，参数放在查询串中，便于分享链接。"""
        filters = Filters(doc_type=doc_type, year=year)
        query = checked_query(q, settings)
        return SearchResponse(**search_response(snapshot.searcher, query, top_k, mode, filters))

    @json_routes.post("/ask", summary="问答：摘编答案并标注出处", response_model=AskResponse)
    def ask(body: AskRequest, snapshot: SnapshotDep, settings: SettingsDep) -> AskResponse:  # type: ignore[valid-type]
        """从最相关段落中摘取最能回答问题的句子，每句后以 【n】 标注出处；无相关内容时 found 为 false。"""
        question = checked_query(body.question, settings)
        answer = snapshot.answerer.answer(question, top_k=body.top_k)
        documents = snapshot.searcher.index.documents
        citations = [
            SearchResult(**result_row(n, hit, documents.get(hit.passage.doc_id)))
            for n, hit in enumerate(answer.citations, start=1)
        ]
        return AskResponse(
            question=question,
            found=answer.found,
            answer=answer.text,
            confidence=round(answer.confidence, 4),
            citations=citations,
        )

    return [json_routes, query_routes]
