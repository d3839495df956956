"""A scripted OpenAI-compatible model server: a real HTTP server on 127.0.0.1, in a thread.

Each test sets `server.script`, a function of the request's user prompt that returns what to do:
a `Reply` with the answer's text pieces (streamed as OpenAI chat.completion.chunk events), or a
failure (a status code, a stall before or during the stream, a broken stream). Requests are kept in
`server.requests` (headers and JSON body) for the tests to inspect.
"""

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    pieces: tuple[str, ...] = ()  # content deltas, in order
    status: int = 200  # anything else: an error response with a JSON body
    stall_before_s: float = 0.0  # sleep before the response's first byte
    stall_after: int | None = None  # sleep stall_s after this many pieces
    stall_s: float = 0.0
    broken: bool = False  # after the pieces, a line that is not JSON, then the connection closes


def reply(*pieces: str, **options: object) -> Reply:
    return Reply(pieces=pieces, **options)  # type: ignore[arg-type]


PASSAGE = re.compile(r"【(\d+)】《[^》]*》[^\n]*\n(.*?)(?=\n\n【\d+】|\n\n问题：)", re.DOTALL)


def passages_in(prompt: str) -> dict[int, str]:
    """The numbered passage texts of a prompt built by service.generate.build_messages."""
    return {int(number): text for number, text in PASSAGE.findall(prompt)}


@dataclass
class StubModelServer:
    script: Callable[[str], Reply] = lambda prompt: reply("好的【1】")
    requests: list[dict] = field(default_factory=list)
    httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> "StubModelServer":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep pytest's output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                stub.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                prompt = body["messages"][-1]["content"]
                plan = stub.script(prompt)
                time.sleep(plan.stall_before_s)
                if plan.status != 200:
                    payload = json.dumps({"error": {"message": "scripted failure", "type": "server_error"}}).encode()
                    self.send_response(plan.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                try:
                    for line in stub.events(plan):
                        self.wfile.write(line.encode())
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def events(self, plan: Reply) -> Iterator[str]:
        def chunk(delta: dict, finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            event = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": "stub"}
            return "data: " + json.dumps({**event, "choices": [choice]}, ensure_ascii=False) + "\n\n"

        yield chunk({"role": "assistant"})
        for number, piece in enumerate(plan.pieces):
            if plan.stall_after is not None and number == plan.stall_after:
                time.sleep(plan.stall_s)
            yield chunk({"content": piece})
        if plan.broken:
            yield 'data: {"id": "chatcmpl-stub", "choices": [{"delta": {"content": "截\n\n'
            return
        yield chunk({}, "stop")
        yield "data: [DONE]\n\n"

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
