"""The FastAPI app: routes per resource, one error shape, the page and its static files.

Errors are `{"error": {"code": ..., "message": <Chinese>}}`. A question over settings.max_query_chars
is 400 `query_too_long` (not 413: the request itself is small, the question is what is refused, and a
GET query has no body); 413 `body_too_large` is kept for JSON bodies over 1 MB (errors.py).

Adding and removing documents needs settings.api_key, sent as `Authorization: Bearer KEY` or
`X-API-Key: KEY`: no key configured is 403 `writes_disabled`, a missing or wrong key 401
`unauthorized`. With settings.read_requires_key the search and document routes need it too.
/api/health, /api/config and the page stay open in every case.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from service.config import Settings
from service.embed import Encoders
from service.engine import open_encoders, open_tokenizer
from service.generate import ModelClient
from service.grounding import GroundingChecker
from service.http.deps import Generators
from service.http.errors import add_error_handlers
from service.http.headers import SWAGGER_UI_DIR, SecurityHeaders
from service.http.routes.documents import read_routes, write_routes
from service.http.routes.search import search_routers
from service.http.routes.system import system_routes
from service.jobs import JobStore, JobWorker
from service.live import LiveIndex
from service.tokenize import WordTokenizer

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
WARM_UP_QUESTION = "党建工作如何开展"


def create_app(settings: Settings, encoders: Encoders | None = None, tokenizer: WordTokenizer | None = None) -> FastAPI:
    """The app with models, tokenizer and index loaded (IndexUnavailable if the index cannot be used).

    Its upload-job worker runs while the app does (started and stopped by the lifespan).
    """
    live = LiveIndex(settings, encoders or open_encoders(settings), tokenizer or open_tokenizer(settings))
    # The first query pays for jieba's dictionary and onnxruntime's first run; pay it before serving.
    live.current().answerer.answer(WARM_UP_QUESTION)
    jobs = JobWorker(JobStore(settings.jobs_path), live)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live.start()
        jobs.start()
        yield
        jobs.stop()
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
    app.state.settings = settings
    # ModelClient None: extractive answers only. The searchers of every version share live.encoders.
    app.state.generators = Generators(ModelClient.from_settings(settings), GroundingChecker(live.encoders))
    add_error_handlers(app)
    app.add_middleware(SecurityHeaders)  # added last, so it wraps every response, 500s included
    for router in [*search_routers(settings), read_routes, write_routes, system_routes]:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/docs", include_in_schema=False)
    def api_docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html")

    return app
