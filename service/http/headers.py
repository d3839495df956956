"""Security headers on every response, and the API docs (Swagger UI) served from local files.

The page and /docs load scripts and styles only from this server (no inline script, no CDN), so a
strict Content-Security-Policy holds for both. Swagger UI's files come from the pinned PyPI package
fastapi-offline (its `static/` folder), not from a CDN and not vendored into this repository.
"""

from importlib.resources import files
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# data: images are the page's empty favicon and Swagger UI's inline SVG icons.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
SWAGGER_UI_DIR = Path(str(files("fastapi_offline") / "static"))


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every HTTP response (errors and static files too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                kept = [(name, value) for name, value in message.get("headers", []) if name.lower() not in names]
                message = {**message, "headers": kept + SECURITY_HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)
