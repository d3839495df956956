"""The FastAPI app: routes per resource, one error shape, the page and its static files.

Errors are `{"error": {"code": ..., "message": <Chinese>}}`. A question over settings.max_query_chars
is 400 `query_too_long` (not 413: the request itself is small, the question is what is refused, and a
GET query has no body); 413 `body_too_large` is kept for JSON bodies over 1 MB (errors.py).

Adding and removing documents needs settings.api_key, sent as `Authorization: Bearer KEY` or
`X-API-Key: KEY`: no key configured is 403 `writes_disabled`, a missing or wrong key 401
`unauthorized`. With settings.read_requires_key the search and document routes need it too.
/api/health, /api/config and the page stay open in every case.
"""

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from service.config import Settings
from service.embed import Encoders
from service.engine import open_encoders, open_tokenizer
from service.generate import ModelClient
from service.grounding import GroundingChecker
from service.http.deps import Generators, utf8_query_string
from service.http.errors import add_error_handlers
from service.http.headers import SWAGGER_UI_DIR, SecurityHeaders
from service.http.observe import Observe
from service.http.routes.documents import read_routes, write_routes
from service.http.routes.questions import question_routers
from service.http.routes.search import search_routers
from service.http.routes.system import metrics_routes, system_routes
from service.ingest.isolate import stop_parses
from service.jobs import JobStore, JobWorker, UploadChecks
from service.live import LiveIndex, Snapshot
from service.monitoring import ServedState
from service.question_log import QuestionLog
from service.tokenize import WordTokenizer

logger = logging.getLogger("dangjian_qa")
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
WARM_UP_QUESTION = "党建工作如何开展"


def served(snapshot: Snapshot) -> tuple[str, str, dict]:
    """What /metrics says of the served index: version, store kind and manifest."""
    return snapshot.version, snapshot.searcher.store.kind, snapshot.searcher.store.manifest


def open_question_log(settings: Settings) -> QuestionLog | None:
    """The question log, or None when it is off or its folder cannot be written (the service runs without)."""
    if not settings.question_log:
        return None
    try:
        return QuestionLog(settings.question_log_file, settings.question_log_days, settings.low_confidence)
    except (OSError, sqlite3.Error) as error:
        logger.warning("问题日志无法打开（%s），本次运行不记录问题和反馈：%s", settings.question_log_file, error)
        return None


def create_app(settings: Settings, encoders: Encoders | None = None, tokenizer: WordTokenizer | None = None) -> FastAPI:
    """The app with models, tokenizer and index loaded (IndexUnavailable if the index cannot be used).

    Its upload-job worker runs while the app does (started and stopped by the lifespan).
    """
    # First: a configured model without the `llm` extra fails here (MissingExtra), before the index loads.
    client = ModelClient.from_settings(settings)
    live = LiveIndex(settings, encoders or open_encoders(settings), tokenizer or open_tokenizer(settings))
    # The first query pays for jieba's dictionary and onnxruntime's first run; pay it before serving.
    live.current().answerer.answer(WARM_UP_QUESTION)
    jobs = JobWorker(JobStore(settings.jobs_path), live)
    upload_checks = UploadChecks(settings.parallel_parses, settings.max_waiting_uploads)
    log = open_question_log(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live.start()
        jobs.start()
        yield
        # Parses first: the threads waiting for them (upload checks, the job worker) then end at once.
        stop_parses()
        upload_checks.stop()
        jobs.stop()
        if log is not None:
            log.close()
        live.close()

    app = FastAPI(
        lifespan=lifespan,
        title="党建问答 API",
        description='卫健系统党建文献检索与问答。所有错误均返回 `{"error": {"code": …, "message": …}}`。',
        version="1.0",
        docs_url=None,  # FastAPI's own /docs and /redoc load their files from a CDN; ours are local
        redoc_url=None,
    )
    app.state.live = live
    app.state.jobs = jobs
    app.state.metrics_registry = CollectorRegistry(auto_describe=True)
    app.state.metrics_registry.register(ServedState(lambda: served(live.current()), jobs.store.state_counts))
    app.state.upload_checks = upload_checks
    app.state.settings = settings
    app.state.question_log = log  # None when settings.question_log is off
    # ModelClient None: extractive answers only. The searchers of every version share live.encoders.
    app.state.generators = Generators(client, GroundingChecker(live.encoders))
    add_error_handlers(app)
    app.add_middleware(SecurityHeaders)  # after the error handlers' middleware: it wraps every response, 500s included
    app.add_middleware(Observe)  # outermost: its duration and status include every other layer's
    routers = [*search_routers(settings), *question_routers(settings), read_routes, write_routes, system_routes]
    for router in [*routers, metrics_routes]:
        app.include_router(router, dependencies=[Depends(utf8_query_string)])  # every route's query and path
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/docs", include_in_schema=False)
    def api_docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html")

    return app
