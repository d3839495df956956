"""HTTP API and the page: routes validate, call the core and shape JSON; every error has one shape.

Errors are `{"error": {"code": ..., "message": <Chinese>}}`. A question over settings.max_query_chars
is 400 `query_too_long` (not 413: the request itself is small, the question is what is refused, and a
GET query has no body); 413 `body_too_large` is kept for JSON bodies over 1 MB (service/http_errors.py).

Adding and removing documents needs settings.api_key, sent as `Authorization: Bearer KEY` or
`X-API-Key: KEY`: no key configured is 403 `writes_disabled`, a missing or wrong key 401
`unauthorized`. With settings.read_requires_key the search and document routes need it too.
The upload and delete routes are in service/api_documents.py; uploads are multipart, outside the
JSON body limit. /api/health and the page stay open in every case.
"""

import hmac
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from embeddings.encoder import Encoder
from service.answer import context_around
from service.config import Settings
from service.engine import open_encoder, open_tokenizer
from service.http_errors import (
    ERROR_RESPONSES,
    ApiError,
    JsonBodyRoute,
    on_api_error,
    on_http_error,
    on_unexpected_error,
    on_validation_error,
)
from service.records import Document, Hit
from service.schemas import (
    AskRequest,
    AskResponse,
    DocumentDetail,
    DocumentList,
    DocumentSummary,
    ErrorResponse,
    Health,
    Mode,
    PassageContext,
    PassageSpan,
    RankEvidence,
    SearchRequest,
    SearchResponse,
    SearchResult,
)
from service.search import Filters
from service.serve import LiveIndex, Snapshot
from service.tokenize import WordTokenizer
from service.update import document_rows

STATIC_DIR = Path(__file__).resolve().parent / "static"
# ---------- shared resources and shaping ----------


def live_snapshot(request: Request) -> Snapshot:
    return request.app.state.live.current()


def app_settings(request: Request) -> Settings:
    return request.app.state.settings


SnapshotDep = Annotated[Snapshot, Depends(live_snapshot)]
SettingsDep = Annotated[Settings, Depends(app_settings)]


# ---------- the API key ----------


def presented_key(request: Request) -> str | None:
    """The key from `Authorization: Bearer KEY`, else from `X-API-Key`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key")


def check_key(request: Request, settings: Settings) -> None:
    """401 unless the request carries settings.api_key (compared in constant time)."""
    key = presented_key(request)
    if key is None or not hmac.compare_digest(key.encode(), str(settings.api_key).encode()):
        raise ApiError(
            401,
            "unauthorized",
            "缺少 API 密钥或密钥错误：请在请求头 Authorization: Bearer <密钥> 或 X-API-Key: <密钥> 中提供",
            headers={"WWW-Authenticate": "Bearer"},
        )


def require_key(request: Request, settings: Settings, code: str, unconfigured: str) -> None:
    """403 with `unconfigured` when no key is configured, else 401 unless the request carries it."""
    if not settings.api_key:
        raise ApiError(403, code, unconfigured)
    check_key(request, settings)


def require_write_key(request: Request, settings: SettingsDep) -> None:
    """Adding and removing documents: only with the configured key; disabled when none is configured."""
    message = "本服务未开启文档上传和删除：请设置环境变量 DJQA_API_KEY 后重启服务，并在请求中提供该密钥"
    require_key(request, settings, "writes_disabled", message)


def require_read_key(request: Request, settings: SettingsDep) -> None:
    """Searches and document reads: open unless settings.read_requires_key."""
    if settings.read_requires_key:
        message = "本服务要求提供密钥才能查询（DJQA_READ_REQUIRES_KEY），但未设置 DJQA_API_KEY；请设置后重启服务"
        require_key(request, settings, "key_not_configured", message)


def clean_query(text: str, settings: Settings) -> str:
    query = text.strip()
    if not query:
        raise ApiError(400, "empty_query", "问题不能为空")
    if len(query) > settings.max_query_chars:
        raise ApiError(400, "query_too_long", f"问题长度不能超过 {settings.max_query_chars} 字")
    return query


def result_of(rank: int, hit: Hit, document: Document | None) -> SearchResult:
    passage = hit.passage
    before, after = context_around(document.text, passage.start, passage.end) if document else ("", "")
    return SearchResult(
        rank=rank,
        score=round(hit.score, 4),
        text=passage.text,
        passage_id=passage.passage_id,
        doc_id=passage.doc_id,
        title=passage.title,
        section=passage.section,
        section_path=list(passage.section_path),
        doc_type=passage.doc_type,
        year=passage.year,
        page=passage.page,
        paragraph=passage.paragraph,
        start=passage.start,
        end=passage.end,
        highlights=list(hit.highlights),
        matched_terms=list(hit.matched_terms),
        dense=None if hit.dense_rank is None else RankEvidence(rank=hit.dense_rank, score=round(hit.dense_score, 4)),
        lexical=None
        if hit.lexical_rank is None
        else RankEvidence(rank=hit.lexical_rank, score=round(hit.lexical_score, 4)),
        context=PassageContext(before=before, after=after),
    )


def run_search(snapshot: Snapshot, query: str, top_k: int, mode: str, filters: Filters) -> SearchResponse:
    started = time.perf_counter()
    hits = snapshot.searcher.search(query, top_k=top_k, mode=mode, filters=filters)
    took_ms = round((time.perf_counter() - started) * 1000, 1)
    documents = snapshot.searcher.index.documents
    results = [result_of(rank, hit, documents.get(hit.passage.doc_id)) for rank, hit in enumerate(hits, start=1)]
    return SearchResponse(query=query, mode=mode, took_ms=took_ms, results=results)


# ---------- routes ----------

READ_KEY = [Depends(require_read_key)]
json_routes = APIRouter(route_class=JsonBodyRoute, prefix="/api", responses=ERROR_RESPONSES, dependencies=READ_KEY)
routes = APIRouter(prefix="/api", dependencies=READ_KEY)
open_routes = APIRouter(prefix="/api")  # health: for monitors and the page footer, never behind the key


@json_routes.post("/search", summary="检索段落", response_model=SearchResponse)
def search_post(body: SearchRequest, snapshot: SnapshotDep, settings: SettingsDep) -> SearchResponse:
    """按问题检索最相关的段落，可按文档、类型、年份过滤。"""
    filters = Filters(
        doc_ids=None if body.doc_ids is None else frozenset(body.doc_ids), doc_type=body.doc_type, year=body.year
    )
    return run_search(snapshot, clean_query(body.query, settings), body.top_k, body.mode, filters)


@routes.get("/search", summary="检索段落（GET）", response_model=SearchResponse, responses=ERROR_RESPONSES)
def search_get(
    snapshot: SnapshotDep,
    settings: SettingsDep,
    q: Annotated[str, Query(description="问题或关键词，不超过 500 字", examples=["党风廉政建设"])] = "",
    top_k: Annotated[int, Query(ge=1, le=50, description="返回条数，1 到 50")] = 5,
    mode: Annotated[Mode, Query(description="检索方式：hybrid、dense、lexical")] = "hybrid",
    doc_type: Annotated[str | None, Query(description="只检索此类型的文档")] = None,
    year: Annotated[int | None, Query(description="只检索此年份的文档")] = None,
) -> SearchResponse:
    """与 POST /api/search 相同，参数放在查询串中，便于分享链接。"""
    return run_search(snapshot, clean_query(q, settings), top_k, mode, Filters(doc_type=doc_type, year=year))


@json_routes.post("/ask", summary="问答：摘编答案并标注出处", response_model=AskResponse)
def ask(body: AskRequest, snapshot: SnapshotDep, settings: SettingsDep) -> AskResponse:
    """从最相关段落中摘取最能回答问题的句子，每句后以 【n】 标注出处；无相关内容时 found 为 false。"""
    question = clean_query(body.question, settings)
    answer = snapshot.answerer.answer(question, top_k=body.top_k)
    documents = snapshot.searcher.index.documents
    return AskResponse(
        question=question,
        found=answer.found,
        answer=answer.text,
        confidence=round(answer.confidence, 4),
        citations=[result_of(n, hit, documents.get(hit.passage.doc_id)) for n, hit in enumerate(answer.citations, 1)],
    )


@routes.get("/documents", summary="文档列表", response_model=DocumentList)
def list_documents(snapshot: SnapshotDep) -> DocumentList:
    """已收录的全部文档及其段落数、字数。"""
    return DocumentList(documents=[DocumentSummary(**row) for row in document_rows(snapshot.searcher.index)])


@routes.get(
    "/documents/{doc_id}",
    summary="文档全文",
    response_model=DocumentDetail,
    responses={404: {"model": ErrorResponse, "description": "文档不存在"}},
)
def document_detail(doc_id: str, snapshot: SnapshotDep) -> DocumentDetail:
    """文档全文及每个段落在全文中的位置（text[start:end] 即段落原文）。"""
    index = snapshot.searcher.index
    document = index.documents.get(doc_id)
    if document is None:
        raise ApiError(404, "document_not_found", f"未找到文档：{doc_id}")
    return DocumentDetail(
        doc_id=document.doc_id,
        title=document.title,
        doc_type=document.doc_type,
        year=document.year,
        level=document.level,
        source=document.source,
        sections=list(document.sections),
        text=document.text,
        passages=[
            PassageSpan(
                passage_id=p.passage_id,
                start=p.start,
                end=p.end,
                section=p.section,
                paragraph=p.paragraph,
                page=p.page,
            )
            for p in index.passages
            if p.doc_id == doc_id
        ],
    )


@open_routes.get("/health", summary="服务状态", response_model=Health)
def health(snapshot: SnapshotDep) -> Health:
    """索引和模型的概况；服务正常时 status 为 ok。"""
    manifest = snapshot.searcher.index.manifest
    return Health(
        documents=manifest["document_count"],
        passages=manifest["passage_count"],
        model=manifest["model_name"],
        weights_sha256=manifest["weights_sha256"],
        built_at=manifest.get("built_at"),
        index_version=snapshot.version,
    )


def create_app(settings: Settings, encoder: Encoder | None = None, tokenizer: WordTokenizer | None = None) -> FastAPI:
    """The app with model, tokenizer and index loaded (IndexUnavailable if the index cannot be used)."""
    from service.api_documents import document_routes  # it builds on this module's errors and key checks

    live = LiveIndex(settings, encoder or open_encoder(settings), tokenizer or open_tokenizer(settings))
    # The first query pays for jieba's dictionary and onnxruntime's first run; pay it before serving.
    live.current().answerer.answer("党建工作如何开展")
    app = FastAPI(
        title="党建问答 API",
        description='卫健系统党建文献检索与问答。所有错误均返回 `{"error": {"code": …, "message": …}}`。',
        version="1.0",
    )
    app.state.live = live
    app.state.settings = settings
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
    app.include_router(json_routes)
    app.include_router(routes)
    app.include_router(open_routes)
    app.include_router(document_routes)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return app
