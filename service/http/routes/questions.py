"""Learning from users: feedback (open, rate-limited), unresolved questions and 「文件中没有」 marks (key),
questions linked to passages (key to change them).

A link is a change of the index (a new version whose passage embeds the question, service/update.py)
and is served before the request answers, as a document delete is.
"""

import threading
import time
from collections import deque
from typing import Annotated, cast
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from service.config import Settings
from service.http.deps import SettingsDep, SnapshotDep, checked_query, require_read_key, require_write_key
from service.http.errors import ERROR_RESPONSES, ApiError, JsonBodyRoute, error_responses
from service.http.schemas import (
    PASSAGE_ID_CHARS,
    FeedbackFields,
    LinkedQuestion,
    LinkedQuestionList,
    OutOfScopeMark,
    QuestionFields,
    QuestionGroupRow,
    QuestionGroups,
    question_models,
)
from service.linking import find_passage, links_of
from service.links import Link, load_links
from service.question_log import Feedback, Mark, QuestionLog

RATE_WINDOW_SECONDS = 60.0
LOG_DISABLED = "本服务未开启问题日志（DJQA_QUESTION_LOG=false），不记录反馈"


class RateLimiter:
    """At most `limit` calls per client address in any RATE_WINDOW_SECONDS; addresses live only in memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self.lock:
            if len(self.calls) > 10_000:  # forget idle clients instead of growing without bound
                self.calls = {key: calls for key, calls in self.calls.items() if calls and calls[-1] > now - 60}
            calls = self.calls.setdefault(client, deque())
            while calls and calls[0] <= now - RATE_WINDOW_SECONDS:
                calls.popleft()
            if len(calls) >= self.limit:
                return False
            calls.append(now)
            return True


def question_log(request: Request) -> QuestionLog | None:
    return request.app.state.question_log


def required_log(request: Request) -> QuestionLog:
    log = question_log(request)
    if log is None:
        raise ApiError(403, "question_log_disabled", LOG_DISABLED)
    return log


def link_row(link: Link, passage_id: str) -> LinkedQuestion:
    return LinkedQuestion(id=link.link_id, passage_id=passage_id, question=link.question, created_at=link.created_at)


def mark_row(mark: Mark) -> OutOfScopeMark:
    return OutOfScopeMark(id=mark.mark_id, question=mark.question, marked_at=mark.at)


def checked_passage_id(passage_id: str) -> str:
    if len(passage_id) > PASSAGE_ID_CHARS:
        raise ApiError(404, "passage_not_found", f"索引中没有段落 {passage_id[:40]}…")
    return passage_id


def question_routers(settings: Settings) -> list[APIRouter]:
    """POST /api/feedback; GET /api/questions and the out-of-scope marks; the passages' linked questions."""
    FeedbackRequest, QuestionRequest = question_models(settings)
    limiter = RateLimiter(settings.feedback_per_minute)
    open_routes = APIRouter(route_class=JsonBodyRoute, prefix="/api", responses=ERROR_RESPONSES)
    read_routes = APIRouter(prefix="/api", dependencies=[Depends(require_read_key)], responses=ERROR_RESPONSES)
    key = [Depends(require_write_key)]
    write_routes = APIRouter(prefix="/api", dependencies=key, responses=ERROR_RESPONSES)
    write_json_routes = APIRouter(route_class=JsonBodyRoute, prefix="/api", dependencies=key, responses=ERROR_RESPONSES)

    @open_routes.post(
        "/feedback",
        summary="反馈：答案有用/没用，或某段回答了问题",
        status_code=202,
        responses=error_responses((429, "反馈过于频繁（too_many_requests）"), (403, "未开启问题日志")),
    )
    def feedback(body: FeedbackRequest, request: Request, settings: SettingsDep) -> dict:  # type: ignore[valid-type]
        """记录用户对答案（helpful）或某段落（passage_id，「这段回答了我的问题」）的反馈，无需密钥；每个客户端每分钟有次数限制。"""
        fields = cast(FeedbackFields, body)  # FeedbackRequest is made per app, so the type checker knows its base
        log = required_log(request)
        question = checked_query(fields.question, settings)
        if not limiter.allow(request.client.host if request.client else "-"):
            raise ApiError(429, "too_many_requests", "反馈过于频繁，请稍后再试", headers={"Retry-After": "60"})
        log.record(Feedback(question, fields.helpful, fields.passage_id))  # written by the log's thread: 202
        return {"accepted": True}

    @write_routes.get("/questions", summary="待处理的问题", response_model=QuestionGroups)
    def unresolved(
        request: Request,
        settings: SettingsDep,
        status: Annotated[str, Query(pattern="^unresolved$", description="目前只有 unresolved")] = "unresolved",
    ) -> QuestionGroups:
        """未回答、置信度低或被评为没用的问题，相近问法归为一组，按次数排序；
        已关联到段落或已标记「文件中没有」的不再列出。需要 API 密钥。"""
        log = required_log(request)
        linked = [link.question for link in load_links(settings.uploads_dir)]
        groups = [QuestionGroupRow(**group.public()) for group in log.unresolved(linked)]
        return QuestionGroups(groups=groups, out_of_scope=[mark_row(mark) for mark in log.marks()])

    @write_json_routes.post(
        "/questions/out-of-scope", summary="标记为「文件中没有」", status_code=201, response_model=OutOfScopeMark
    )
    def mark_out_of_scope(body: QuestionRequest, request: Request, settings: SettingsDep) -> OutOfScopeMark:  # type: ignore[valid-type]
        """把问题标记为文件中没有答案：/api/ask 此后对它及相近问法回答「未找到」。需要 API 密钥。"""
        fields = cast(QuestionFields, body)  # QuestionRequest is made per app, as FeedbackRequest is
        question = checked_query(fields.question, settings)
        return mark_row(required_log(request).mark_out_of_scope(question))

    @write_routes.delete("/questions/out-of-scope/{mark_id}", summary="取消「文件中没有」标记", status_code=204)
    def unmark(mark_id: int, request: Request) -> Response:
        """删除一个「文件中没有」标记。需要 API 密钥。"""
        if not required_log(request).unmark(mark_id):
            raise ApiError(404, "not_found", f"没有编号为 {mark_id} 的标记")
        return Response(status_code=204)

    @read_routes.get("/passages/{passage_id}/questions", summary="段落的关联问题", response_model=LinkedQuestionList)
    def linked_questions(passage_id: str, snapshot: SnapshotDep, settings: SettingsDep) -> LinkedQuestionList:
        """列出关联到此段落的问题。"""
        passage = find_passage(snapshot.searcher.store, checked_passage_id(passage_id))
        links = links_of(passage, load_links(settings.uploads_dir))
        return LinkedQuestionList(passage_id=passage_id, questions=[link_row(link, passage_id) for link in links])

    @write_json_routes.post(
        "/passages/{passage_id}/questions",
        summary="把问题关联到段落",
        status_code=201,
        response_model=LinkedQuestion,
        responses=error_responses((404, "段落不存在（passage_not_found）"), (409, "已关联（duplicate_question）")),
    )
    async def link(passage_id: str, body: QuestionRequest, request: Request, settings: SettingsDep) -> JSONResponse:  # type: ignore[valid-type]
        """把问题关联到段落：问题成为该段落的检索单元（各模型和关键词检索），同类问法由此找到该段落。
        新索引版本生效后才返回。需要 API 密钥。"""
        fields = cast(QuestionFields, body)  # QuestionRequest is made per app, as FeedbackRequest is
        question = checked_query(fields.question, settings)
        live = request.app.state.live
        made = await run_in_threadpool(live.link_question, checked_passage_id(passage_id), question)
        row = link_row(made, passage_id)
        headers = {"Location": f"/api/passages/{quote(passage_id)}/questions/{made.link_id}"}
        return JSONResponse(row.model_dump(), status_code=201, headers=headers)

    @write_routes.delete("/passages/{passage_id}/questions/{link_id}", summary="删除段落的关联问题", status_code=204)
    async def unlink(passage_id: str, link_id: str, request: Request) -> Response:
        """删除一个关联问题，新索引版本生效后返回。需要 API 密钥。"""
        await run_in_threadpool(request.app.state.live.unlink_question, checked_passage_id(passage_id), link_id)
        return Response(status_code=204)

    return [open_routes, read_routes, write_routes, write_json_routes]
