"""The live index: follows the store's live version (data/index/CURRENT, or Milvus's alias), so a rebuild
or a document added by this or any other server is served without a restart."""

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from service.answer import Answerer
from service.collections import DEFAULT_COLLECTION
from service.config import Settings
from service.embed import Encoders
from service.engine import open_searcher, store_version
from service.index import IndexUnavailable
from service.search import Searcher
from service.stores import StoreUnreachable
from service.tokenize import WordTokenizer
from service.update import AddReport, Progress, UnknownDocuments, add_files, delete_documents

logger = logging.getLogger("dangjian_qa")

# Reading CURRENT costs a syscall, Milvus's alias a round trip; once a second is plenty for a rebuild,
# and is how soon other servers answer with a document added through one of them.
RELOAD_CHECK_SECONDS = 1.0
# A version that fails to load is tried again after 2, 4, 8 … seconds, at most this long apart.
MAX_RETRY_SECONDS = 60.0


class Snapshot:
    """One loaded index version and what answers from it; a request keeps the one it started with.

    Thread-safe: any thread may search it while it holds a lease (LiveIndex.lease). Once retired (no
    longer live), it closes its store's files when the last lease is released, not at garbage collection.
    """

    def __init__(self, version: str, searcher: Searcher, answerer: Answerer) -> None:
        self.version = version
        self.searcher = searcher
        self.answerer = answerer
        self.lock = threading.Lock()  # guards the three fields below
        self.leases = 0
        self.retired = False
        self.closed = False

    def acquire(self) -> bool:
        """Take a lease; False once it is closed (the caller takes the next live snapshot instead)."""
        with self.lock:
            if self.closed:
                return False
            self.leases += 1
            return True

    def release(self) -> None:
        with self.lock:
            self.leases -= 1
        self.close_if_unused()

    def retire(self) -> None:
        """No longer live: close as soon as no request uses it (now, if none does)."""
        with self.lock:
            self.retired = True
        self.close_if_unused()

    def close_if_unused(self) -> None:
        with self.lock:
            if not self.retired or self.leases or self.closed:
                return
            self.closed = True
        self.searcher.store.close()


class LiveIndex:
    """The snapshot of the live index version, swapped for a new one when the store's live version moves.

    Thread-safe: requests take leases on the current snapshot (lease) and never load anything; a
    watcher thread (start/stop) and this process's own changes (reload) load new versions, one at a
    time (reload_lock), and retire the old snapshot.
    """

    def __init__(self, settings: Settings, encoders: Encoders, tokenizer: WordTokenizer) -> None:
        self.settings = settings
        self.encoders = encoders
        self.tokenizer = tokenizer
        self.reload_lock = threading.Lock()
        self.snapshot = self.load()
        self.stopping = threading.Event()
        self.watcher: threading.Thread | None = None
        self.failing: tuple[str, int, float] | None = None  # (version, failed attempts, retry when)
        self.store_down = False

    def load(self) -> Snapshot:
        """Load the version CURRENT names now (IndexUnavailable when there is none or it is broken)."""
        # Read the name first: if CURRENT moves on while we load, the next check loads again.
        version = store_version(self.settings) or ""
        searcher = open_searcher(self.settings, self.encoders, self.tokenizer)
        return Snapshot(version, searcher, Answerer(searcher, self.settings.answer_min_confidence))

    def current(self) -> Snapshot:
        """The live snapshot, for what it holds in memory (documents, manifest); searches take a lease."""
        return self.snapshot

    @contextmanager
    def lease(self) -> Iterator[Snapshot]:
        """The live snapshot, kept open until the block ends even if another version goes live meanwhile."""
        snapshot = self.snapshot
        while not snapshot.acquire():  # closed between reading and leasing: a newer one is live
            if snapshot is self.snapshot:  # closed and not replaced: the server is stopping (close)
                raise IndexUnavailable("服务正在停止，请稍后重试")
            snapshot = self.snapshot
        try:
            yield snapshot
        finally:
            snapshot.release()

    def start(self) -> None:
        """Follow the store's live version in a background thread (requests never pay for a load)."""
        self.watcher = threading.Thread(target=self.watch, name="index-watcher", daemon=True)
        self.watcher.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.watcher is not None:
            self.watcher.join(timeout=10)

    def close(self) -> None:
        """Stop watching and close the live snapshot once its last request is done."""
        self.stop()
        self.snapshot.retire()

    def watch(self) -> None:
        while not self.stopping.wait(RELOAD_CHECK_SECONDS):
            try:
                self.check()
            except Exception:  # a bug must not stop the server from following its index
                logger.exception("检查索引版本时出错")

    def check(self) -> None:
        """One look at the store's live version; loads it when it is new and not waiting for a retry."""
        try:
            version = store_version(self.settings)
        except StoreUnreachable as error:
            if not self.store_down:
                logger.warning("无法读取当前索引版本，继续使用版本 %s：%s", self.snapshot.version, error)
            self.store_down = True
            return
        if self.store_down:
            logger.info("向量数据库已恢复")
            self.store_down = False
        if not version or version == self.snapshot.version:
            return
        if self.failing is not None and self.failing[0] == version and time.monotonic() < self.failing[2]:
            return
        with self.reload_lock:
            self.switch_if_moved()

    def switch_if_moved(self) -> None:
        """Serve the version the store names, if it is another one; call with reload_lock held.

        A version that cannot be loaded is logged (once) and the current one kept: the change behind
        it is already on disk (an upload's job is done). The watcher tries it again with backoff.
        """
        try:
            version = store_version(self.settings)
            if not version or version == self.snapshot.version:
                return
            snapshot = self.load()
        except (IndexUnavailable, StoreUnreachable) as error:
            self.note_failure(version or "", error)
            return
        previous, self.snapshot, self.failing = self.snapshot, snapshot, None
        previous.retire()
        logger.info("已切换到新索引版本 %s", snapshot.version)

    def note_failure(self, version: str, error: Exception) -> None:
        attempts = self.failing[1] + 1 if self.failing is not None and self.failing[0] == version else 1
        delay = min(MAX_RETRY_SECONDS, 2.0**attempts)
        self.failing = (version, attempts, time.monotonic() + delay)
        if attempts == 1:
            logger.warning("新索引无法加载，继续使用版本 %s（之后重试）：%s", self.snapshot.version, error)
        else:
            logger.debug("新索引仍无法加载（第 %d 次），%.0f 秒后重试", attempts, delay)

    def reload(self) -> Snapshot:
        """Switch now, without waiting for the watcher (after a change this process made); waits for a
        load already under way instead of loading twice."""
        with self.reload_lock:
            self.switch_if_moved()
        return self.snapshot

    def add_files(
        self,
        files: Sequence[tuple[str, Path]],
        on_progress: Progress | None = None,
        job_id: str | None = None,
        before_save: Callable[[AddReport], None] | None = None,
        collection: str = DEFAULT_COLLECTION,
    ) -> AddReport:
        """update.add_files on the served index; the new version is served before this returns."""
        report = add_files(
            self.settings.model_copy(update={"encode_workers": 1}),  # a core stays free for questions
            self.encoders,
            self.tokenizer,
            files,
            on_progress=on_progress,
            job_id=job_id,
            before_save=before_save,
            collection=collection,
        )
        if report.changed:
            self.reload()
        return report

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """update.delete_documents on the served index; served without them before this returns.

        Ids unknown to the version being served (the newest one, give or take a second) are refused
        at once, without the writer lock or loading the index, which takes seconds for a large one.
        """
        unknown = [doc_id for doc_id in dict.fromkeys(doc_ids) if doc_id not in self.current().searcher.store.documents]
        if unknown:
            raise UnknownDocuments(unknown)
        delete_documents(self.settings, self.encoders, doc_ids)
        self.reload()
