"""Documents: list and read them (read key, when required); upload and delete them (write key).

Uploads and deletes run the change in a worker thread, so searches go on answering from the
current index version; the new version is served before the answer is sent. Uploads are read by
service/http/multipart.py (per-file size limit while streaming), never through the 1 MB JSON body
limit of the search routes.
"""

import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.http.deps import SettingsDep, SnapshotDep, require_read_key, require_write_key
from service.http.errors import ApiError
from service.http.multipart import FileOverLimit, FormError, NotAForm, TooManyFiles, receive_files
from service.http.schemas import (
    DocumentDetail,
    DocumentList,
    DocumentSummary,
    ErrorResponse,
    FileProblem,
    PassageSpan,
    RemovedDocument,
    UploadedDocument,
    UploadReport,
)
from service.index import IndexUnavailable, document_rows
from service.update import (
    ADDED,
    DUPLICATE,
    FAILED,
    NOT_ADDED,
    OVER_LIMIT,
    REPLACED,
    TOO_LARGE,
    UNSUPPORTED,
    AddReport,
    UnknownDocuments,
    WouldEmptyIndex,
)

MAX_UPLOAD_FILES = 50  # per request: each file costs a temp file and a parse
read_routes = APIRouter(prefix="/api", dependencies=[Depends(require_read_key)])
write_routes = APIRouter(prefix="/api", dependencies=[Depends(require_write_key)])

UPLOAD_FORM = {  # the body as /docs shows it; the route reads the stream itself to keep the size limit
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "一个或多个 .txt、.md、.docx、.pdf 文件",
                        }
                    },
                }
            }
        },
    }
}
WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (401, "缺少 API 密钥或密钥错误（unauthorized）"),
        (403, "未设置 DJQA_API_KEY，不能上传或删除（writes_disabled）"),
        (503, "索引不可用（index_unavailable）"),
    )
}
UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": UploadReport, "description": "没有新文档，但有文档被替换；跳过和失败的文件也列出"},
    **WRITE_RESPONSES,
    **{
        status: {"model": ErrorResponse, "description": description}
        for status, description in (
            (400, "没有文件、文件过多或表单格式错误（no_files、too_many_files、invalid_form）"),
            (409, "所有文件都与已有文档内容相同（duplicate_document）"),
            (413, "有文件超过大小上限（file_too_large），本次上传的文件都未添加"),
            (415, "文件类型不支持（unsupported_file_type）或请求不是表单（unsupported_media_type）"),
            (422, "文件无法读取：损坏、为空、没有文字或是扫描件（unreadable_file）；原因不一时为 upload_failed"),
        )
    },
}
# When no file of an upload was added and they all failed alike, their common reason is the answer.
FAILURE_CODES = {
    DUPLICATE: (409, "duplicate_document"),
    UNSUPPORTED: (415, "unsupported_file_type"),
    TOO_LARGE: (413, "file_too_large"),
    OVER_LIMIT: (413, "document_too_large"),
    FAILED: (422, "unreadable_file"),
}


@read_routes.get("/documents", summary="文档列表", response_model=DocumentList)
def list_documents(snapshot: SnapshotDep) -> DocumentList:
    """已收录的全部文档及其段落数、字数。"""
    return DocumentList(documents=[DocumentSummary(**row) for row in document_rows(snapshot.searcher.index)])


@read_routes.get(
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
                passage_id=p.passage_id, start=p.start, end=p.end, section=p.section, paragraph=p.paragraph, page=p.page
            )
            for p in index.passages
            if p.doc_id == doc_id
        ],
    )


def upload_report(report: AddReport) -> UploadReport:
    """Every file of the upload under what happened to it; reasons without the repeated file name."""
    documents = report.index.documents if report.index else {}

    def uploaded(status: str) -> list[UploadedDocument]:
        return [
            UploadedDocument(file=o.name, doc_id=o.doc_id, title=documents[o.doc_id].title, passages=o.passages)
            for o in report.having(status)
        ]

    def problems(*statuses: str) -> list[FileProblem]:
        return [
            FileProblem(
                file=o.name,
                reason=o.reason.removeprefix(f"{o.name}："),
                doc_id=o.doc_id if o.status == DUPLICATE else None,
            )
            for o in report.having(*statuses)
        ]

    return UploadReport(
        added=uploaded(ADDED),
        replaced=uploaded(REPLACED),
        skipped=problems(DUPLICATE),
        failed=problems(*NOT_ADDED),
    )


def upload_status(report: AddReport) -> int:
    """201 when a document was added, 200 when documents were only replaced (other files listed either way).

    When nothing changed the upload is an error: the files' common reason (409 duplicate, 415 type,
    413 size, 422 unreadable), or 422 upload_failed when their reasons differ; the message lists each.
    """
    if report.having(ADDED):
        return 201
    if report.having(REPLACED):
        return 200
    reasons = "；".join(outcome.reason for outcome in report.outcomes)
    statuses = {outcome.status for outcome in report.outcomes}
    if len(statuses) == 1:
        status, code = FAILURE_CODES[statuses.pop()]
        raise ApiError(status, code, reasons)
    raise ApiError(422, "upload_failed", f"没有添加任何文档：{reasons}")


@write_routes.post(
    "/documents",
    summary="上传文档",
    status_code=201,
    response_model=UploadReport,
    responses=UPLOAD_RESPONSES,
    openapi_extra=UPLOAD_FORM,
)
async def upload_documents(request: Request, settings: SettingsDep) -> JSONResponse:
    """上传 .txt、.md、.docx、.pdf 文件（表单字段 files，可多个）并立即收录，需要 API 密钥。

    文件名决定文档 ID：同名文件内容有变化时替换原文档，内容与已有文档相同时跳过。
    有新增时返回 201，只有替换时返回 200，并逐个列出跳过和失败的文件。
    """
    folder = Path(tempfile.mkdtemp(prefix="djqa-upload-"))
    try:
        content_type = request.headers.get("content-type", "")
        try:
            received = await receive_files(
                request.stream(), content_type, "files", folder, settings.max_upload_bytes, MAX_UPLOAD_FILES
            )
        except FileOverLimit as error:
            raise ApiError(413, "file_too_large", f"{error}；本次上传的文件均未添加") from error
        except NotAForm as error:
            raise ApiError(415, "unsupported_media_type", str(error)) from error
        except TooManyFiles as error:
            raise ApiError(400, "too_many_files", str(error)) from error
        except FormError as error:
            raise ApiError(400, "invalid_form", str(error)) from error
        if not received:
            raise ApiError(400, "no_files", "请选择要上传的文件（表单字段 files）")
        files = [(upload.name, upload.path) for upload in received]
        try:
            # In a worker thread: searches go on answering from the current version meanwhile.
            report = await run_in_threadpool(request.app.state.live.add_files, files)
        except IndexUnavailable as error:
            raise ApiError(503, "index_unavailable", str(error)) from error
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    status = upload_status(report)
    return JSONResponse(upload_report(report).model_dump(), status_code=status)


@write_routes.delete(
    "/documents/{doc_id}",
    summary="删除文档",
    response_model=RemovedDocument,
    responses={
        **WRITE_RESPONSES,
        404: {"model": ErrorResponse, "description": "文档不存在（document_not_found）"},
        409: {"model": ErrorResponse, "description": "不能删除最后一篇文档（last_document）"},
    },
)
async def remove_document(doc_id: str, request: Request) -> RemovedDocument:
    """从索引中删除文档及其保存的原文件，需要 API 密钥。"""
    try:
        await run_in_threadpool(request.app.state.live.delete_documents, [doc_id])
    except UnknownDocuments as error:
        raise ApiError(404, "document_not_found", f"未找到文档：{doc_id}") from error
    except WouldEmptyIndex as error:
        raise ApiError(409, "last_document", str(error)) from error
    except IndexUnavailable as error:
        raise ApiError(503, "index_unavailable", str(error)) from error
    return RemovedDocument(removed=doc_id)
