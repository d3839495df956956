"""Per request: an id (X-Request-ID, accepted from a proxy or made here, and returned), one access log
line and the request metrics, all by route template (`/api/documents/{doc_id}`), never by raw path.

The access line holds method, route, status and duration only: no query string (a GET search carries
the question in it) and no headers (the API key).
"""

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import REQUEST_ID
from service.monitoring import REQUEST_SECONDS, REQUESTS

logger = logging.getLogger("dangjian_qa")
# An id from outside goes into every log line of the request, so only a plain token is taken as it is
# (a proxy's UUID or trace id); anything else (line breaks, quotes, 200 characters) is replaced.
ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNMATCHED = "unmatched"  # every path no route knows: a scanner's thousand paths stay one label


def request_id(scope: Scope) -> str:
    """The request's X-Request-ID when it is a plain token, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if ACCEPTED_ID.fullmatch(given):
                return given
            break
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The path template of the route that answered (a mount's prefix for static files)."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED


class Observe:
    """ASGI middleware: request id in the log context and the response, access line, request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        REQUEST_ID.set(rid)  # this request's task (and its worker threads) only
        header = (b"x-request-id", rid.encode())
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            method, route = scope["method"], route_template(scope)
            labels = (method, route, str(status))
            REQUESTS.labels(*labels).inc()
            REQUEST_SECONDS.labels(*labels).observe(seconds)
            logger.info(
                "%s %s %d %.1f ms",
                method,
                route,
                status,
                seconds * 1000,
                extra={"method": method, "route": route, "status": status, "duration_ms": round(seconds * 1000, 1)},
            )
