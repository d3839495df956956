"""The live index: follows the store's live version (data/index/CURRENT, or Milvus's alias), so a rebuild
or a document added by this or any other server is served without a restart."""

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.answer import Answerer
from service.config import Settings
from service.embed import Encoders
from service.engine import open_searcher, store_version
from service.index import IndexUnavailable
from service.linking import link_question, unlink_question
from service.links import Link
from service.search import Searcher
from service.stores import StoreUnreachable
from service.tokenize import WordTokenizer
from service.update import (
    AddReport,
    Progress,
    UnknownDocuments,
    add_files,
    delete_documents,
)

logger = logging.getLogger("dangjian_qa")

# Reading CURRENT costs a syscall, Milvus's alias a round trip; once a second is plenty for a rebuild,
# and is how soon other servers answer with a document added through one of them.
RELOAD_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Snapshot:
    """One loaded index version and what answers from it; a request keeps the one it started with."""

    version: str
    searcher: Searcher
    answerer: Answerer


class LiveIndex:
    """The searcher of the live index version; swaps in a new one when CURRENT names another."""

    def __init__(self, settings: Settings, encoders: Encoders, tokenizer: WordTokenizer) -> None:
        self.settings = settings
        self.encoders = encoders
        self.tokenizer = tokenizer
        self.reload_lock = threading.Lock()
        self.snapshot = self.load()
        self.checked_at = time.monotonic()

    def load(self) -> Snapshot:
        """Load the version CURRENT names now (IndexUnavailable when there is none or it is broken)."""
        # Read the name first: if CURRENT moves on while we load, the next check loads again.
        version = store_version(self.settings) or ""
        searcher = open_searcher(self.settings, self.encoders, self.tokenizer)
        return Snapshot(version, searcher, Answerer(searcher, self.settings.answer_min_confidence))

    def switch_if_moved(self) -> None:
        """Serve the version CURRENT names, if it is another one; call with reload_lock held.

        A version that cannot be loaded is logged and the current one kept: the change behind it is
        already on disk (an upload's job is done), and the next check tries again.
        """
        self.checked_at = time.monotonic()
        try:
            version = store_version(self.settings)
            if not version or version == self.snapshot.version:
                return
            self.snapshot = self.load()
        except (IndexUnavailable, StoreUnreachable) as error:
            logger.warning("新索引无法加载，继续使用版本 %s：%s", self.snapshot.version, error)
            return
        logger.info("已切换到新索引版本 %s", self.snapshot.version)

    def reload(self) -> Snapshot:
        """Switch now, without waiting for the next check (after a change this process made);
        waits for a load already under way instead of loading twice."""
        with self.reload_lock:
            self.switch_if_moved()
        return self.snapshot

    def add_files(
        self,
        files: Sequence[tuple[str, Path]],
        on_progress: Progress | None = None,
        job_id: str | None = None,
        before_save: Callable[[AddReport], None] | None = None,
    ) -> AddReport:
        """update.add_files on the served index; the new version is served before this returns."""
        report = add_files(
            self.settings,
            self.encoders,
            self.tokenizer,
            files,
            on_progress=on_progress,
            job_id=job_id,
            before_save=before_save,
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

    def link_question(self, passage_id: str, question: str) -> Link:
        """update.link_question on the served index; served with the new unit before this returns."""
        link = link_question(self.settings, self.encoders, self.tokenizer, passage_id, question)
        self.reload()
        return link

    def unlink_question(self, passage_id: str, link_id: str) -> None:
        """update.unlink_question on the served index; served without it before this returns."""
        unlink_question(self.settings, self.encoders, self.tokenizer, passage_id, link_id)
        self.reload()

    def current(self) -> Snapshot:
        """The live snapshot, reloaded first if CURRENT changed (checked at most once a second)."""
        now = time.monotonic()
        if now - self.checked_at >= RELOAD_CHECK_SECONDS and self.reload_lock.acquire(blocking=False):
            # Other requests meanwhile go on with the old snapshot instead of waiting for the load.
            try:
                self.switch_if_moved()
            finally:
                self.reload_lock.release()
        return self.snapshot
