"""Documents: list and read them (read key, when required); upload and delete them (write key).

An upload is received into the jobs folder (service/http/multipart.py: per-file size limit while
streaming, never the 1 MB JSON body limit of the search routes), read and checked against the live
index (types, sizes, content limits, duplicates: errors answered at once), and then indexed by the
job worker (service/jobs.py): the request answers 202 with the job. A delete runs in a worker
thread and the new version is served before it answers. Searches go on answering meanwhile.
"""

import shutil
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.collections import (
    DEFAULT_COLLECTION,
    MAX_NAME_CHARS,
    MAX_PAGE_SIZE,
    DocumentQuery,
    checked_collection,
    document_page,
)
from service.config import Settings
from service.http.deps import SettingsDep, SnapshotDep, require_read_key, require_write_key
from service.http.errors import ApiError, error_responses
from service.http.multipart import ReceivedFile, receive_files
from service.http.schemas import (
    CollectionInfo,
    DocumentDetail,
    DocumentList,
    DocumentSummary,
    PassageSpan,
    RemovedDocument,
    Sort,
    UploadJob,
)
from service.jobs import Job, nothing_added, problem_rows
from service.stores import document_rows
from service.update import ADDED, REPLACED, classify_files

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
                            "minItems": 1,
                            "description": "一个或多个 .txt、.md、.docx、.pdf 文件",
                        },
                        "collection": {
                            "type": "string",
                            "maxLength": MAX_NAME_CHARS,
                            "default": DEFAULT_COLLECTION,
                            "description": "收录到哪个文档集（汉字、字母、数字、_ 和 -），默认 default",
                        },
                    },
                }
            }
        },
    }
}
WRITE_RESPONSES = error_responses(
    (401, "缺少 API 密钥或密钥错误（unauthorized）"),
    (403, "未设置 DJQA_API_KEY，不能上传或删除（writes_disabled）"),
    (503, "索引不可用（index_unavailable），或另一个写入操作仍在进行（index_busy）"),
)
UPLOAD_RESPONSES = {
    **WRITE_RESPONSES,
    **error_responses(
        (400, "没有文件、文件过多或表单格式错误（no_files、too_many_files、invalid_form）"),
        (409, "所有文件都与已有文档内容相同（duplicate_document）"),
        (
            413,
            "有文件超过大小上限（file_too_large），本次上传的文件都未添加；或文件内容超过上限（document_too_large）",
        ),
        (415, "文件类型不支持（unsupported_file_type）或请求不是表单（unsupported_media_type）"),
        (
            422,
            "文件无法读取：损坏、为空、没有文字或是扫描件（unreadable_file）；原因不一时为 upload_failed；"
            "文档集名称无效（invalid_collection）",
        ),
        (507, "磁盘空间不足（insufficient_storage），文档未添加"),
    ),
}


@read_routes.get("/documents", summary="文档列表", response_model=DocumentList)
def list_documents(
    snapshot: SnapshotDep,
    collection: Annotated[str | None, Query(description="只列出此文档集的文档")] = None,
    q: Annotated[str, Query(max_length=200, description="标题或文档 ID 包含的文字（不区分大小写）")] = "",
    sort: Annotated[
        Sort, Query(description="排序：added 收录顺序、title 标题、passages 段落数、year 年份；前加 - 为倒序")
    ] = "added",
    page: Annotated[int, Query(ge=1, description="页码，从 1 开始")] = 1,
    page_size: Annotated[
        int | None, Query(ge=1, le=MAX_PAGE_SIZE, description=f"每页条数，1 到 {MAX_PAGE_SIZE}；不给时一页列出全部")
    ] = None,
) -> DocumentList:
    """已收录的文档及其段落数、字数、文档集，可按文档集和标题筛选、排序、分页；并列出全部文档集。"""
    searcher = snapshot.searcher
    name = None if collection is None else checked_collection(collection)  # 422 invalid_collection
    listed = document_page(document_rows(searcher.store), DocumentQuery(name, q, sort, page, page_size))
    return DocumentList(
        **{**listed, "documents": [DocumentSummary(**row) for row in listed["documents"]]},
        collections=[CollectionInfo(**vars(count)) for count in searcher.collections.values()],
    )


@read_routes.get(
    "/documents/{doc_id}",
    summary="文档全文",
    response_model=DocumentDetail,
    responses=error_responses((404, "文档不存在")),
)
def document_detail(doc_id: str, snapshot: SnapshotDep) -> DocumentDetail:
    """文档全文及每个段落在全文中的位置（text[start:end] 即段落原文）。"""
    store = snapshot.searcher.store
    document = store.documents.get(doc_id)
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
            for p in store.passages_of(doc_id)
        ],
    )


def check_upload(
    request: Request, settings: Settings, received: list[ReceivedFile], folder: Path, collection: str
) -> Job:
    """Read and check the received files against the live index; a job for those to add, else ApiError.

    Runs in a worker thread: reading a large Word or PDF file takes a while, searches go on meanwhile.
    """
    files = [(upload.name, upload.path) for upload in received]
    live = request.app.state.live
    _, report = classify_files(live.current().searcher.store, files, settings)
    accepted = report.having(ADDED, REPLACED)
    if not accepted:
        status, code, message = nothing_added(report)
        raise ApiError(status, code, message)
    kept = {outcome.path for outcome in accepted}
    for upload in received:
        if upload.path not in kept:
            upload.path.unlink(missing_ok=True)
    job_files = [{"name": outcome.name, "path": outcome.path.name} for outcome in accepted]
    return request.app.state.jobs.store.create(folder, job_files, problem_rows(report), collection)


@write_routes.post(
    "/documents",
    summary="上传文档",
    status_code=202,
    response_model=UploadJob,
    responses=UPLOAD_RESPONSES,
    openapi_extra=UPLOAD_FORM,
)
async def upload_documents(request: Request, settings: SettingsDep) -> JSONResponse:
    """上传 .txt、.md、.docx、.pdf 文件（表单字段 files，可多个）到文档集（表单字段 collection，默认 default），
    需要 API 密钥。

    文件保存并检查（类型、大小、内容上限、是否重复）后立即返回 202 和任务 ID，由后台建立索引；
    用 GET /api/jobs/{job_id} 查看进度和结果。没有可收录的文件时立即返回错误。
    文件名决定文档 ID：同名文件内容有变化时替换原文档，内容与已有文档相同时跳过。
    """
    jobs = request.app.state.jobs
    folder = jobs.store.receiving_folder()
    job: Job | None = None
    try:
        content_type = request.headers.get("content-type", "")
        received, fields = await receive_files(  # a FormError is answered by errors.CORE_ERRORS
            request.stream(),
            content_type,
            "files",
            folder,
            settings.max_upload_bytes,
            settings.max_upload_files,
            text_fields=("collection",),
        )
        # 422 invalid_collection before anything is read; an empty field is the default collection
        collection = checked_collection(fields.get("collection", "").strip() or DEFAULT_COLLECTION)
        if not received:
            raise ApiError(400, "no_files", "请选择要上传的文件（表单字段 files）")
        job = await run_in_threadpool(check_upload, request, settings, received, folder, collection)
    finally:
        if job is None:
            shutil.rmtree(folder, ignore_errors=True)
    jobs.submit(job)
    location = f"/api/jobs/{job.job_id}"
    return JSONResponse(job.public(), status_code=202, headers={"Location": location})


@write_routes.get(
    "/jobs/{job_id}",
    summary="上传任务的进度和结果",
    response_model=UploadJob,
    responses={**WRITE_RESPONSES, **error_responses((404, "任务不存在（job_not_found）"))},
)
def upload_job(job_id: str, request: Request) -> UploadJob:
    """上传任务的状态：queued、running（passages_done / passages_total 为编码进度）、done 或 failed，及各文件的结果。"""
    job = request.app.state.jobs.store.load(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"未找到上传任务：{job_id}（已完成的任务保留 7 天）")
    return UploadJob(**job.public())


@write_routes.delete(
    "/documents/{doc_id}",
    summary="删除文档",
    response_model=RemovedDocument,
    responses={
        **WRITE_RESPONSES,
        **error_responses((404, "文档不存在（document_not_found）"), (409, "不能删除最后一篇文档（last_document）")),
    },
)
async def remove_document(doc_id: str, request: Request) -> RemovedDocument:
    """从索引中删除文档及其保存的原文件，需要 API 密钥。"""
    # UnknownDocuments (404), WouldEmptyIndex (409) and IndexUnavailable (503): errors.CORE_ERRORS
    await run_in_threadpool(request.app.state.live.delete_documents, [doc_id])
    return RemovedDocument(removed=doc_id)
