"""Shared request dependencies: the live index snapshot, the settings, the generator, the API key, the question."""

import hmac
import threading
from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import parse_qsl, unquote

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.answer import Answerer
from service.config import Settings
from service.generate import Generator, ModelClient
from service.grounding import GroundingChecker
from service.http.errors import ApiError
from service.live import Snapshot
from service.search import QueryRejected, clean_query


async def live_snapshot(request: Request) -> AsyncIterator[Snapshot]:
    """The live snapshot, leased until the response is sent (a streamed answer included): its version's
    files stay open while the request uses them, whatever goes live meanwhile."""
    with request.app.state.live.lease() as snapshot:
        yield snapshot


async def app_settings(request: Request) -> Settings:
    # async: FastAPI would run a plain function in its thread pool, a hop per request for a lookup.
    return request.app.state.settings


class Generators:
    """The app's Generator for the served index version, built once per version, not per request.

    The model client and the grounding checker are the app's; the answerer is the snapshot's, so a
    request answers from the version it started with. Generators hold no per-question state, so one
    is shared by every request thread; the lock only guards swapping in the next version's.
    """

    def __init__(self, client: ModelClient | None, checker: GroundingChecker) -> None:
        self.client = client
        self.checker = checker
        self.lock = threading.Lock()
        self.latest: Generator | None = None

    def for_answerer(self, answerer: Answerer) -> Generator:
        with self.lock:
            if self.latest is None or self.latest.answerer is not answerer:
                self.latest = Generator(answerer, self.client, self.checker)
            return self.latest


SnapshotDep = Annotated[Snapshot, Depends(live_snapshot)]
SettingsDep = Annotated[Settings, Depends(app_settings)]


def snapshot_generator(request: Request, snapshot: SnapshotDep) -> Generator:
    """The generator of the request's snapshot (FastAPI gives a request one snapshot for all its dependencies)."""
    return request.app.state.generators.for_answerer(snapshot.answerer)


GeneratorDep = Annotated[Generator, Depends(snapshot_generator)]


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


# Declared for openapi.json, so that /docs has an Authorize button; presented_key reads the headers.
BEARER_KEY = HTTPBearer(
    auto_error=False, scheme_name="BearerKey", description="API 密钥（DJQA_API_KEY）：Authorization: Bearer <密钥>"
)
HEADER_KEY = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="ApiKeyHeader", description="API 密钥（DJQA_API_KEY）"
)


def require_write_key(
    request: Request,
    settings: SettingsDep,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER_KEY)],
    _header: Annotated[str | None, Security(HEADER_KEY)],
) -> None:
    """Adding and removing documents: only with the configured key; disabled when none is configured."""
    message = "本服务未开启文档上传和删除：请设置环境变量 DJQA_API_KEY 后重启服务，并在请求中提供该密钥"
    require_key(request, settings, "writes_disabled", message)


async def require_read_key(request: Request, settings: SettingsDep) -> None:
    """Searches and document reads: open unless settings.read_requires_key."""
    if settings.read_requires_key:
        message = "本服务要求提供密钥才能查询（DJQA_READ_REQUIRES_KEY），但未设置 DJQA_API_KEY；请设置后重启服务"
        require_key(request, settings, "key_not_configured", message)


async def require_metrics_key(request: Request, settings: SettingsDep) -> None:
    """GET /metrics: open like /api/health unless settings.metrics_require_key."""
    if settings.metrics_require_key:
        message = "本服务要求提供密钥才能读取指标（DJQA_METRICS_REQUIRE_KEY），但未设置 DJQA_API_KEY；请设置后重启服务"
        require_key(request, settings, "key_not_configured", message)


async def utf8_query_string(request: Request) -> None:
    """400 invalid_encoding when the query string or the path is not UTF-8 (「%ED%A0%80」, 「%FF」):
    Starlette would read it as U+FFFD and search or look up that, where a JSON body with the same text
    is refused. Every API route depends on it (service/http/app.py)."""
    try:
        parse_qsl(request.scope["query_string"].decode("utf-8"), errors="strict")  # raw bytes, then %XX escapes
        unquote(request.scope.get("raw_path", b"").decode("utf-8"), errors="strict")
    except UnicodeDecodeError as error:
        raise ApiError(400, "invalid_encoding", "查询参数或路径不是合法的 UTF-8 文本") from error


def checked_query(text: str, settings: Settings) -> str:
    """The question, stripped; 400 empty_query / query_too_long."""
    try:
        return clean_query(text, settings.max_query_chars)
    except QueryRejected as error:
        raise ApiError(400, error.code, str(error)) from error
