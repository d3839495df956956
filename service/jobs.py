"""Upload jobs: files stored and checked by the request, indexed by one worker thread, state on disk.

Layout of settings.jobs_path (beside the index by default, data/jobs):

    .receiving-<pid>-<hex>/     an upload being received; removed at start once its process is gone
    <job id>/job.json           the job's state, written with service/atomic.py
    <job id>/upload-<n>         its files until the job has finished (their originals are kept by then)

Every state change (queued, running, committing, done, failed) is written durably (service/atomic.py);
the encoding progress of a running job is not: it is kept in memory, where GET /api/jobs/{id} reads it,
and is worth nothing after a crash (the job starts again). The worker takes jobs from an in-memory
queue that start-up fills with the queued jobs on disk and uploads fill as they are accepted.

A job's change is one atomic index version (update.add_files under the writer lock), so a job killed
at any moment is either applied or not. Just before the switch the job writes its result with
`committing`; the version's manifest lists the job id (applied_jobs). At start a job found running
is done if its id is in the live manifest, else it is queued again; a job interrupted
MAX_ATTEMPTS times is reported failed.
"""

import asyncio
import contextvars
import errno
import json
import logging
import os
import queue
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from service.atomic import fsync_directory, write_atomic
from service.collections import DEFAULT_COLLECTION
from service.index import IndexBusy, IndexUnavailable
from service.ingest import ParsesStopped
from service.live import LiveIndex
from service.stores import StoreUnreachable
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
)

logger = logging.getLogger("dangjian_qa")
JOB_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, as create() makes them

QUEUED, RUNNING, DONE, FAILED_STATE = "queued", "running", "done", "failed"
RECEIVING_PREFIX = ".receiving-"
MAX_ATTEMPTS = 3  # a job that kills its server every time (too big for memory) must not loop forever
KEEP_FINISHED = timedelta(days=7)
# When no file of an upload was added and they all failed alike, their common reason is the answer.
FAILURE_CODES = {
    DUPLICATE: (409, "duplicate_document"),
    UNSUPPORTED: (415, "unsupported_file_type"),
    TOO_LARGE: (413, "file_too_large"),
    OVER_LIMIT: (413, "document_too_large"),
    FAILED: (422, "unreadable_file"),
}
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_MESSAGE = "磁盘空间不足，文档未添加，索引未改变；请清理磁盘后重试"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def problem_rows(report: AddReport) -> dict[str, list[dict]]:
    """The files not added: skipped (duplicates, with the doc id they duplicate) and failed, with reasons."""

    def problems(*statuses: str) -> list[dict]:
        return [
            {
                "file": o.name,
                "reason": o.reason.removeprefix(f"{o.name}："),
                "doc_id": o.doc_id if o.status == DUPLICATE else None,
            }
            for o in report.having(*statuses)
        ]

    return {"skipped": problems(DUPLICATE), "failed": problems(*NOT_ADDED)}


def report_rows(report: AddReport) -> dict[str, list[dict]]:
    """Every file of a change under what happened to it: added, replaced, skipped, failed."""
    documents = report.documents

    def uploaded(status: str) -> list[dict]:
        return [
            {"file": o.name, "doc_id": o.doc_id, "title": documents[o.doc_and_path()[0]].title, "passages": o.passages}
            for o in report.having(status)
        ]

    return {"added": uploaded(ADDED), "replaced": uploaded(REPLACED), **problem_rows(report)}


def nothing_added(report: AddReport) -> tuple[int, str, str]:
    """(status, code, message) of a change that added nothing: the files' common reason (409 duplicate,
    415 type, 413 size or limits, 422 unreadable), or 422 upload_failed when their reasons differ."""
    reasons = "；".join(outcome.reason for outcome in report.outcomes)
    statuses = {outcome.status for outcome in report.outcomes}
    if len(statuses) == 1:
        status, code = FAILURE_CODES[statuses.pop()]
        return status, code, reasons
    return 422, "upload_failed", f"没有添加任何文档：{reasons}"


@dataclass
class Job:
    """One upload's indexing, as GET /api/jobs/{id} shows it (plus the files it still has to add)."""

    job_id: str
    state: str = QUEUED
    created_at: str = field(default_factory=now)
    started_at: str | None = None
    finished_at: str | None = None
    files: list[dict] = field(default_factory=list)  # {"name": user's file name, "path": name in the job folder}
    collection: str = DEFAULT_COLLECTION  # the documents' collection (service/collections.py)
    passages_done: int = 0
    passages_total: int = 0
    status: int | None = None  # what the upload answers now that it is done: 201, 200, or the error's
    result: dict | None = None  # report_rows of the change, with the problems found by the request
    error: dict | None = None  # {"code", "message"} when nothing was added
    prior: dict = field(default_factory=dict)  # skipped and failed files found by the request
    attempts: int = 0
    committing: bool = False  # result written, version being switched (see module docstring)

    def public(self) -> dict:
        """The job as the API shows it: file names, no internal bookkeeping."""
        hidden = {"prior", "attempts", "committing"}
        shown = {key: value for key, value in asdict(self).items() if key not in hidden}
        return {**shown, "files": [file["name"] for file in self.files]}


class JobStore:
    """Jobs as folders of settings.jobs_path; every state change is one atomic write of job.json."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        # Each job's state as last read or written, for /metrics (djqa_jobs) without reading the disk.
        self.states: dict[str, str] = {}
        # The latest state of each job this process changed, with its progress: what GET answers,
        # also when the disk was too full to write it (then the job is run again after a restart,
        # which is safe).
        self.latest: dict[str, Job] = {}

    def receiving_folder(self) -> Path:
        """A new folder for an upload being received; its name carries this process's id."""
        self.folder.mkdir(parents=True, exist_ok=True)
        receiving = self.folder / f"{RECEIVING_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        receiving.mkdir()
        return receiving

    def create(self, receiving: Path, files: list[dict], prior: dict, collection: str = DEFAULT_COLLECTION) -> Job:
        """Turn a received folder into a queued job (job.json first, then one rename)."""
        job = Job(job_id=uuid.uuid4().hex, files=files, prior=prior, collection=collection)
        job.result = {"added": [], "replaced": [], "skipped": [], "failed": [], **prior}
        write_atomic(receiving / "job.json", json.dumps(asdict(job), ensure_ascii=False).encode())
        receiving.rename(self.folder / job.job_id)
        fsync_directory(self.folder)
        with self.lock:
            self.states[job.job_id] = job.state
        logger.info("上传任务 %s 已排队（%d 个文件）", job.job_id, len(files), extra={"job_id": job.job_id})
        return job

    def load(self, job_id: str) -> Job | None:
        if not JOB_ID.fullmatch(job_id):  # what create() makes; anything else is not a job, nor a path
            return None
        if job_id in self.latest:
            return Job(**asdict(self.latest[job_id]))
        path = self.folder / job_id / "job.json"
        if not path.is_file():
            return None
        return Job(**json.loads(path.read_text(encoding="utf-8")))

    def save(self, job: Job) -> None:
        """A state change: durable before this returns."""
        with self.lock:
            self.latest[job.job_id] = Job(**asdict(job))
            self.states[job.job_id] = job.state
            write_atomic(self.folder / job.job_id / "job.json", json.dumps(asdict(job), ensure_ascii=False).encode())

    def save_progress(self, job: Job) -> None:
        """Progress of a running job: in memory only (a crash restarts the job from nothing anyway)."""
        with self.lock:
            self.latest[job.job_id] = Job(**asdict(job))

    def jobs(self) -> list[Job]:
        """Every job, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [self.load(path.name) for path in self.folder.iterdir() if not path.name.startswith(".")]
        jobs = sorted((job for job in found if job is not None), key=lambda job: job.created_at)
        with self.lock:
            self.states = {job.job_id: job.state for job in jobs}
        return jobs

    def state_counts(self) -> dict[str, int]:
        """How many jobs are in each state (every state named, 0 included): those found at start
        (jobs() then) and those created or changed since."""
        with self.lock:
            states = list(self.states.values())
        return {state: states.count(state) for state in (QUEUED, RUNNING, DONE, FAILED_STATE)}

    def clean(self) -> None:
        """At start: remove uploads whose receiving process is gone, folders that never became a job,
        and finished jobs older than KEEP_FINISHED."""
        if not self.folder.is_dir():
            return
        cutoff = (datetime.now(UTC) - KEEP_FINISHED).isoformat(timespec="seconds")
        for path in self.folder.iterdir():
            if path.name.startswith(RECEIVING_PREFIX):
                stale = not process_alive(int(path.name.removeprefix(RECEIVING_PREFIX).split("-")[0] or 0))
            elif (job := self.load(path.name)) is None:
                stale = True
            else:
                stale = job.state in (DONE, FAILED_STATE) and job.created_at < cutoff
            if stale:
                shutil.rmtree(path, ignore_errors=True)

    def remove_files(self, job: Job) -> None:
        """A finished job's uploaded files (its originals are kept by the index change)."""
        for file in job.files:
            (self.folder / job.job_id / file["path"]).unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()  # a receiving folder of this very process at start is from a previous life


class JobWorker:
    """One thread that runs queued jobs in order against the live index; searches go on meanwhile."""

    def __init__(self, store: JobStore, live: LiveIndex) -> None:
        self.store, self.live = store, live
        self.queue: queue.Queue[Job | None] = queue.Queue()  # None: stop
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="upload-jobs", daemon=True)

    def start(self) -> None:
        """Clean the folder, settle jobs a killed server left running, queue the queued ones (oldest
        first), then start the thread."""
        self.store.clean()
        applied = set(self.live.current().searcher.store.manifest.get("applied_jobs", []))
        for job in self.store.jobs():
            if job.state == RUNNING:
                self.recover(job, applied)
            if job.state == QUEUED:
                self.queue.put(job)
        self.thread.start()

    def recover(self, job: Job, applied: set[str]) -> None:
        """A job the previous server was running when it died: done if its change is live, else queued again."""
        if job.committing and job.job_id in applied:
            self.finish(job, DONE)
            logger.info("上传任务 %s 在服务中断前已完成", job.job_id)
        elif job.attempts >= MAX_ATTEMPTS:
            message = f"任务已中断 {job.attempts} 次，未添加文档；请检查文件后重新上传"
            job.error = {"code": "job_interrupted", "message": message}
            job.status, job.result = 500, None
            self.finish(job, FAILED_STATE)
        else:
            job.state, job.committing, job.passages_done = QUEUED, False, 0
            self.store.save(job)
            logger.info("上传任务 %s 因服务中断重新排队", job.job_id)

    def stop(self) -> None:
        """Stop after the running job; jobs still queued stay queued on disk for the next start."""
        self.stopping.set()
        self.queue.put(None)
        if self.thread.is_alive():
            self.thread.join(timeout=5)

    def submit(self, job: Job) -> None:
        """Queue a job the store has just created (a copy: the caller goes on reading its own)."""
        self.queue.put(Job(**asdict(job)))

    def loop(self) -> None:
        while (job := self.queue.get()) is not None and not self.stopping.is_set():
            try:
                self.run(job)
            except Exception:  # a bug or a broken disk must not stop the worker: the job says so
                logger.exception("上传任务 %s 出错", job.job_id)
                job.error = {"code": "internal_error", "message": "服务内部错误，文档未添加，请稍后重试"}
                job.status, job.result = 500, None
                try:
                    self.finish(job, FAILED_STATE)
                except OSError:
                    logger.exception("上传任务 %s 的状态无法写入", job.job_id)

    def run(self, job: Job) -> None:
        """Index the job's files (update.add_files through the live index) and record the outcome."""
        job.state, job.started_at, job.attempts = RUNNING, now(), job.attempts + 1
        self.store.save(job)
        logger.info("上传任务 %s 开始（第 %d 次）", job.job_id, job.attempts, extra={"job_id": job.job_id})
        files = [(file["name"], self.store.folder / job.job_id / file["path"]) for file in job.files]
        try:
            report = self.live.add_files(
                files,
                on_progress=self.progress(job),
                job_id=job.job_id,
                before_save=lambda rep: self.commit(job, rep),
                collection=job.collection,
            )
        except ParsesStopped:
            return  # the server is stopping: the job stays running on disk and is queued again at start
        except (IndexUnavailable, IndexBusy, StoreUnreachable) as error:
            code = "index_busy" if isinstance(error, IndexBusy) else "index_unavailable"
            code = "store_unavailable" if isinstance(error, StoreUnreachable) else code
            logger.warning("上传任务 %s 失败：%s", job.job_id, error)  # the folder or the store's own words
            message = getattr(error, "public_message", str(error))  # a job's error is read over HTTP
            job.error, job.status = {"code": code, "message": message}, 503
            self.finish(job, FAILED_STATE)
            return
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            job.error, job.status = {"code": "insufficient_storage", "message": DISK_FULL_MESSAGE}, 507
            job.result, job.committing = None, False
            self.finish(job, FAILED_STATE)
            return
        self.settle(job, report)
        self.finish(job, DONE if report.changed else FAILED_STATE)

    def progress(self, job: Job) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            job.passages_done, job.passages_total = done, total
            self.store.save_progress(job)

        return report

    def settle(self, job: Job, report: AddReport) -> None:
        """The job's result: this change's rows plus the files the request already turned away."""
        rows = report_rows(report)
        for key in ("skipped", "failed"):
            rows[key] = job.prior.get(key, []) + rows[key]
        job.result = rows
        if report.changed:
            job.status, job.error = (201 if report.having(ADDED) else 200), None
        else:
            status, code, message = nothing_added(report)
            job.status, job.error = status, {"code": code, "message": message}
        job.passages_done = job.passages_total = sum(outcome.passages for outcome in report.having(ADDED, REPLACED))

    def commit(self, job: Job, report: AddReport) -> None:
        """Just before the switch: the result is on disk, so a kill after it loses nothing (see recover)."""
        self.settle(job, report)
        job.committing = True
        self.store.save(job)

    def finish(self, job: Job, state: str) -> None:
        """Delete the job's files, then record its end: a job seen finished has nothing left on disk."""
        self.store.remove_files(job)
        job.state, job.finished_at, job.committing = state, now(), False
        self.store.save(job)
        code = (job.error or {}).get("code", "")
        logger.log(
            logging.INFO if state == DONE else logging.WARNING,
            "上传任务 %s %s：HTTP 状态 %s，%d 个段落%s",
            job.job_id,
            "完成" if state == DONE else "失败",
            job.status,
            job.passages_done,
            f"，{code}" if code else "",
            extra={"job_id": job.job_id, "state": state, "status": job.status, "error_code": code or None},
        )


class UploadsBusy(Exception):
    """More uploads are waiting to be read than UploadChecks lets wait (the API answers 503)."""


class UploadChecks:
    """The request-side reading of uploads, on threads of its own: never the pool the searches use.

    Each check waits for parse children (service/ingest/isolate.py), so a flood of uploads would
    otherwise hold every thread that answers searches. `parallel` checks run at once and `waiting`
    more may queue; beyond that UploadsBusy, so no unbounded work piles up behind gone clients.
    Call run() from the event loop only.
    """

    def __init__(self, parallel: int, waiting: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="upload-check")
        self.capacity = parallel + waiting
        self.pending = 0

    async def run(self, function: Callable[..., Job], *args: object) -> Job:
        if self.pending >= self.capacity:
            raise UploadsBusy(f"正在检查的上传过多（最多 {self.capacity} 个同时检查或等待），请稍后重试")
        self.pending += 1
        try:
            # A bare executor does not carry context variables (run_in_threadpool does): copy the
            # request's, so the lines the check logs (the job queued) carry its request id.
            context = contextvars.copy_context()
            return await asyncio.wrap_future(self.executor.submit(context.run, function, *args))
        finally:
            self.pending -= 1

    def stop(self) -> None:
        """Drop the checks still queued; a running one ends when stop_parses() kills its parse."""
        self.executor.shutdown(wait=False, cancel_futures=True)
