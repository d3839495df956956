"""Serving: the live index that follows data/index/CURRENT, and uvicorn start-up."""

import logging
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from embeddings.encoder import Encoder
from service.answer import Answerer
from service.cli import EXIT_INPUT, EXIT_OK, EXIT_UNAVAILABLE
from service.config import Settings
from service.engine import build_index, open_encoder, open_searcher, open_tokenizer, source_files
from service.index import IndexUnavailable, current_version
from service.originals import original_files
from service.search import Searcher
from service.tokenize import WordTokenizer
from service.update import AddReport, add_files, delete_documents

logger = logging.getLogger("dangjian_qa")

RELOAD_CHECK_SECONDS = 1.0  # reading CURRENT costs a syscall; once a second is plenty for an admin's rebuild


@dataclass(frozen=True)
class Snapshot:
    """One loaded index version and what answers from it; a request keeps the one it started with."""

    version: str
    searcher: Searcher
    answerer: Answerer


class LiveIndex:
    """The searcher of the live index version; swaps in a new one when CURRENT names another."""

    def __init__(self, settings: Settings, encoder: Encoder, tokenizer: WordTokenizer) -> None:
        self.settings = settings
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.reload_lock = threading.Lock()
        self.snapshot = self.load()
        self.checked_at = time.monotonic()

    def load(self) -> Snapshot:
        """Load the version CURRENT names now (IndexUnavailable when there is none or it is broken)."""
        # Read the name first: if CURRENT moves on while we load, the next check loads again.
        version = current_version(self.settings.index_dir) or ""
        searcher = open_searcher(self.settings, self.encoder, self.tokenizer)
        return Snapshot(version, searcher, Answerer(searcher, self.settings.answer_min_confidence))

    def reload(self) -> Snapshot:
        """Load the version CURRENT names now, without waiting for the next check (after a change
        this process made); waits for a load already under way instead of loading twice."""
        with self.reload_lock:
            version = current_version(self.settings.index_dir)
            if version and version != self.snapshot.version:
                self.snapshot = self.load()
                logger.info("已切换到新索引版本 %s", self.snapshot.version)
            self.checked_at = time.monotonic()
        return self.snapshot

    def add_files(self, files: Sequence[tuple[str, Path]]) -> AddReport:
        """update.add_files on the served index; the new version is served before this returns."""
        report = add_files(self.settings, self.encoder, self.tokenizer, files)
        if report.changed:
            self.reload()
        return report

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """update.delete_documents on the served index; served without them before this returns."""
        delete_documents(self.settings, self.encoder, doc_ids)
        self.reload()

    def current(self) -> Snapshot:
        """The live snapshot, reloaded first if CURRENT changed (checked at most once a second)."""
        now = time.monotonic()
        if now - self.checked_at >= RELOAD_CHECK_SECONDS and self.reload_lock.acquire(blocking=False):
            # Other requests meanwhile go on with the old snapshot instead of waiting for the load.
            try:
                self.checked_at = now
                version = current_version(self.settings.index_dir)
                if version and version != self.snapshot.version:
                    self.snapshot = self.load()
                    logger.info("已切换到新索引版本 %s", self.snapshot.version)
            except IndexUnavailable as error:
                logger.warning("新索引无法加载，继续使用版本 %s：%s", self.snapshot.version, error)
            finally:
                self.reload_lock.release()
        return self.snapshot


def missing_index_message(settings: Settings) -> str:
    return (
        f"错误：索引不存在（{settings.index_dir}）。\n"
        "请先运行 `make index`（或 `dangjian-qa index`）构建索引，"
        "或使用 `dangjian-qa serve --build-missing` 在启动时从文档目录自动构建。"
    )


def build_from_seeds(settings: Settings, encoder: Encoder, tokenizer: WordTokenizer) -> int:
    """Index settings.seeds_dir before serving (--build-missing); an exit code."""
    paths = source_files(settings.seeds_dir) if settings.seeds_dir.is_dir() else []
    if not paths and not original_files(settings.uploads_dir):
        print(f"错误：文档目录 {settings.seeds_dir} 中没有可索引的文件（.txt .md .docx .pdf）", file=sys.stderr)
        return EXIT_INPUT
    print(f"索引不存在，正在从 {settings.seeds_dir} 构建…", flush=True)
    report = build_index(paths, settings, encoder, tokenizer, progress=True, with_uploads=True)
    print(f"已索引 {len(report.corpus.documents)} 篇文档、{len(report.corpus.passages)} 个段落", flush=True)
    return EXIT_OK if report.corpus.documents else EXIT_INPUT


def serve(settings: Settings, build_missing: bool) -> int:
    """Load model and index once, then serve the API and the page until interrupted; an exit code."""
    import uvicorn

    from service.api import create_app  # api.py needs LiveIndex from here, so import it late

    if current_version(settings.index_dir) is None and not build_missing:
        print(missing_index_message(settings), file=sys.stderr)
        return EXIT_UNAVAILABLE
    started = time.perf_counter()
    encoder, tokenizer = open_encoder(settings), open_tokenizer(settings)
    if current_version(settings.index_dir) is None:
        code = build_from_seeds(settings, encoder, tokenizer)
        if code != EXIT_OK:
            return code
    app = create_app(settings, encoder, tokenizer)
    index = app.state.live.current().searcher.index
    print(
        f"已加载 {index.manifest['document_count']} 篇文档、{index.manifest['passage_count']} 个段落"
        f"（用时 {time.perf_counter() - started:.1f} 秒）→ http://{settings.host}:{settings.port}",
        flush=True,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return EXIT_OK
