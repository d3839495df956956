"""HTTP errors in the project's one shape, and JSON request bodies checked before FastAPI parses them.

Every error is `{"error": {"code": ..., "message": <Chinese>}}`: our own ApiError, the core's typed
exceptions (CORE_ERRORS), FastAPI's validation and HTTP errors, and anything unexpected (500, logged).
`add_error_handlers` installs all of them; `error_responses` documents them in openapi.json.
"""

import errno
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.collections import InvalidCollection, UnknownCollections
from service.http.multipart import FileOverLimit, FormError, NotAForm, TooManyFiles
from service.http.schemas import ErrorResponse
from service.index import IndexBusy, IndexUnavailable
from service.stores import StoreUnreachable
from service.update import UnknownDocuments, WouldEmptyIndex

logger = logging.getLogger("dangjian_qa")

MAX_JSON_BYTES = 1024 * 1024
# Our bodies are flat objects with one list; deeper nesting is only ever an attack on the parser.
MAX_JSON_DEPTH = 32
FIELD_NAMES = {
    "query": "问题（query）",
    "q": "问题（q）",
    "question": "问题（question）",
    "top_k": "返回条数（top_k）",
    "mode": "检索方式（mode）",
    "doc_ids": "文档范围（doc_ids）",
    "doc_type": "文档类型（doc_type）",
    "year": "年份（year）",
    "doc_id": "文档 ID（doc_id）",
    "stream": "流式输出（stream）",
    "collections": "文档集范围（collections）",
    "collection": "文档集（collection）",
    "sort": "排序（sort）",
    "page": "页码（page）",
    "page_size": "每页条数（page_size）",
}


def error_responses(*described: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses` for openapi.json: each (status, Chinese description) in the error shape."""
    return {status: {"model": ErrorResponse, "description": description} for status, description in described}


ERROR_RESPONSES = error_responses(  # the JSON body and parameter errors every search route can answer
    (400, "问题为空或过长、JSON 格式或编码错误"),
    (413, "请求体超过 1 MB"),
    (415, "请求体不是 JSON"),
    (422, "参数类型或取值错误"),
)


class ApiError(Exception):
    """An error the client can fix; becomes {"error": {"code", "message"}} with its status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def unknown_documents_message(error: UnknownDocuments) -> str:
    return f"未找到文档：{'、'.join(error.doc_ids)}"  # the core's message names the CLI; the API's does not


def over_limit_message(error: FileOverLimit) -> str:
    return f"{error}；本次上传的文件均未添加"


# The core's (and the upload form reader's) exceptions as API errors: type -> (status, code, message).
# Looked up along the exception's class hierarchy, so FileOverLimit's entry wins over FormError's.
CORE_ERRORS: dict[type[Exception], tuple[int, str, Callable[[Any], str]]] = {
    UnknownDocuments: (404, "document_not_found", unknown_documents_message),
    WouldEmptyIndex: (409, "last_document", str),
    IndexUnavailable: (503, "index_unavailable", lambda error: error.public_message),  # no server paths
    IndexBusy: (503, "index_busy", str),
    StoreUnreachable: (503, "store_unavailable", lambda error: error.public_message),  # no URI, no English
    FileOverLimit: (413, "file_too_large", over_limit_message),
    NotAForm: (415, "unsupported_media_type", str),
    TooManyFiles: (400, "too_many_files", str),
    FormError: (400, "invalid_form", str),
    InvalidCollection: (422, "invalid_collection", str),
    UnknownCollections: (422, "unknown_collection", str),
}


# ---------- request bodies: checked before FastAPI parses them ----------


async def read_json_body(request: Request) -> bytes:
    """The body if it is UTF-8 JSON within MAX_JSON_BYTES (counted while reading, not only declared)."""
    media_type, _, parameters = request.headers.get("content-type", "").partition(";")
    media_type = media_type.strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", "请求体必须是 JSON（Content-Type: application/json）")
    charset = next((p.split("=", 1)[1].strip(' "').lower() for p in parameters.split(";") if "charset=" in p), "")
    if charset not in ("", "utf-8", "utf8"):
        raise ApiError(415, "unsupported_media_type", f"只接受 UTF-8 编码的 JSON，收到的是 {charset}")
    too_large = ApiError(413, "body_too_large", "请求体不能超过 1 MB")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_JSON_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(
            400, "invalid_encoding", f"请求体不是合法的 UTF-8 文本（第 {error.start + 1} 个字节）"
        ) from error
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"第 {error.lineno} 行第 {error.colno} 列" if text.strip() else "请求体为空"
        raise ApiError(400, "invalid_json", f"请求体不是合法的 JSON（{where}）") from error
    except ValueError as error:  # an integer past sys.get_int_max_str_digits() (4300 digits)
        limit = sys.get_int_max_str_digits()
        raise ApiError(400, "invalid_json", f"请求体中的整数过长（不能超过 {limit} 位）") from error
    except RecursionError as error:
        raise ApiError(400, "invalid_json", f"请求体的 JSON 嵌套层数不能超过 {MAX_JSON_DEPTH}") from error
    check_json_value(value)
    return body


def check_json_value(value: Any) -> None:
    """400 when the parsed body nests deeper than MAX_JSON_DEPTH or holds a lone surrogate.

    JSON's `\\ud800` escape decodes to a str that no UTF-8 encoder (the tokenizer, the response)
    accepts; it is refused here, once, for every route. The walk is iterative, so depth costs no stack.
    """
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise ApiError(400, "invalid_json", f"请求体的 JSON 嵌套层数不能超过 {MAX_JSON_DEPTH}")
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as error:
                code_point = f"U+{ord(item[error.start]):04X}"
                message = f"请求中含有无效的 Unicode 字符（孤立的代理项 {code_point}），请删除后重试"
                raise ApiError(400, "invalid_encoding", message) from error
        elif isinstance(item, dict):
            pending += [(part, depth + 1) for pair in item.items() for part in pair]
        elif isinstance(item, list):
            pending += [(part, depth + 1) for part in item]


class JsonBodyRoute(APIRoute):
    """A route whose JSON body passes read_json_body before FastAPI validates it against the model."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked_handler(request: Request) -> Response:
            body = await read_json_body(request)
            replayed = False

            async def replay() -> dict[str, Any]:
                nonlocal replayed
                if replayed:
                    return await request.receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await handler(Request(request.scope, replay))

        return checked_handler


# ---------- error handlers: FastAPI's own errors in our shape ----------


# pydantic's error types in Chinese; "{name}" is the field, other names come from the error's context.
TYPE_MESSAGES = {
    "missing": "缺少参数{name}",
    "int_type": "参数{name}必须是整数",
    "int_parsing": "参数{name}必须是整数",
    "int_from_float": "参数{name}必须是整数",
    "int_parsing_size": "参数{name}的数值过大",
    "string_type": "参数{name}必须是字符串",
    "str_type": "参数{name}必须是字符串",
    "string_too_short": "参数{name}不能短于 {min_length} 个字符",
    "string_too_long": "参数{name}不能长于 {max_length} 个字符",
    "bool_type": "参数{name}必须是布尔值（true 或 false）",
    "bool_parsing": "参数{name}必须是布尔值（true 或 false）",
    "float_type": "参数{name}必须是数字",
    "float_parsing": "参数{name}必须是数字",
    "list_type": "参数{name}必须是列表",
    "too_long": "参数{name}最多 {max_length} 项",
    "too_short": "参数{name}至少 {min_length} 项",
    "dict_type": "参数{name}必须是 JSON 对象",
    "model_type": "参数{name}必须是 JSON 对象",
    "greater_than_equal": "参数{name}不能小于 {ge}",
    "greater_than": "参数{name}必须大于 {gt}",
    "less_than_equal": "参数{name}不能大于 {le}",
    "less_than": "参数{name}必须小于 {lt}",
    "extra_forbidden": "不支持参数{name}",
}


def parameter_message(error: dict[str, Any]) -> str:
    """A Chinese sentence for one pydantic validation error, naming the field (never pydantic's English)."""
    field = next((str(part) for part in reversed(error.get("loc", ())) if isinstance(part, str)), "")
    if field == "body":
        return "缺少请求体" if error["type"] == "missing" else "请求体必须是 JSON 对象"
    name = f"「{FIELD_NAMES.get(field, field)}」"
    kind, context = error["type"], error.get("ctx") or {}
    if kind == "literal_error":
        choices = context.get("expected", "").replace(" or ", ", ").replace("'", "").replace(", ", "、")
        return f"参数{name}必须是以下之一：{choices}"
    template = TYPE_MESSAGES.get(kind, "参数{name}的值无效")
    try:
        return template.format(name=name, **context)
    except (KeyError, IndexError):  # a context without the number the sentence names
        return f"参数{name}的值无效"


async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    errors = list(error.errors())
    if errors and errors[0]["type"] == "json_invalid":
        return error_response(400, "invalid_json", "请求体不是合法的 JSON")
    return error_response(422, "invalid_parameter", "；".join(dict.fromkeys(map(parameter_message, errors))))


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's own 405 names only the first route's)."""
    served = [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in request.app.routes)
    ]
    return [*served, "OPTIONS"]


async def on_http_error(request: Request, error: StarletteHTTPException) -> Response:
    if error.status_code == 404:
        return error_response(404, "not_found", f"接口或文件不存在：{request.url.path}")
    if error.status_code == 405:
        allow = {"Allow": ", ".join(allowed_methods(request))}
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=allow)
        message = f"{request.url.path} 不支持 {request.method} 请求，可用的方法：{allow['Allow']}"
        return error_response(405, "method_not_allowed", message, headers=allow)
    return error_response(error.status_code, f"http_{error.status_code}", str(error.detail), headers=error.headers)


async def on_api_error(request: Request, error: ApiError) -> JSONResponse:
    return error_response(error.status, error.code, error.message, headers=error.headers)


async def on_core_error(request: Request, error: Exception) -> JSONResponse:
    status, code, message = next(CORE_ERRORS[kind] for kind in type(error).__mro__ if kind in CORE_ERRORS)
    if status >= 500:  # the details (folders, the store's address and words) are for the log only
        logger.warning("%s %s：%s", request.method, request.url.path, error)
    return error_response(status, code, message(error))


async def on_unexpected_error(request: Request, error: Exception) -> JSONResponse:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        logger.error("磁盘空间不足：%s %s：%s", request.method, request.url.path, error)
        return error_response(507, "insufficient_storage", "磁盘空间不足，本次操作未执行，索引未改变；请清理磁盘后重试")
    logger.error("未处理的错误：%s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, "internal_error", "服务内部错误，请稍后重试")


class UnexpectedErrors:
    """ASGI middleware answering any exception a route lets through as on_unexpected_error says.

    Starlette's own catch-all (ServerErrorMiddleware) sends its 500 from outside every middleware,
    so without the security headers, and then re-raises, and uvicorn drops the connection. This one
    sits inside SecurityHeaders and does not re-raise: the client gets a 500 on a connection it can
    keep using. A response already under way (a stream) can only be ended.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as error:
            request = Request(scope)
            if started:
                logger.error("响应中途出错：%s %s", request.method, request.url.path, exc_info=error)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            response = await on_unexpected_error(request, error)
            await response(scope, receive, send)


def add_error_handlers(app: FastAPI) -> None:
    """Every error the app answers, in the one shape (call before adding SecurityHeaders, which wraps it)."""
    app.add_exception_handler(ApiError, on_api_error)
    for kind in CORE_ERRORS:
        app.add_exception_handler(kind, on_core_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_middleware(UnexpectedErrors)
