"""Serving: load the model, tokenizer and index once, then run the API and the page under uvicorn.

Logging is configured before this runs (cli.main, service/logs.py); uvicorn logs through it and writes
no access lines of its own: those would carry the query string, i.e. users' questions
(service/http/observe.py writes one per request without it).
"""

import logging
import time

import uvicorn

from service.config import Settings
from service.engine import NothingToIndex, build_index, indexable_files, open_encoders, open_tokenizer, store_version
from service.http.app import create_app
from service.index import IndexUnavailable
from service.logs import LOGGER_NAME
from service.vectors import one_thread_per_search

logger = logging.getLogger(LOGGER_NAME)
SHUTDOWN_GRACE_SECONDS = 5  # searches end in milliseconds; an upload still being read is cut off


def missing_index_message(settings: Settings) -> str:
    where = settings.index_dir if settings.store == "faiss" else f"Milvus {settings.milvus_uri}"
    return (
        f"索引不存在（{where}）。\n"
        "请先运行 `make index`（或 `dangjian-qa index`）构建索引，"
        "或使用 `dangjian-qa serve --build-missing` 在启动时从文档目录自动构建。"
    )


def serve(settings: Settings, build_missing: bool) -> None:
    """Serve until interrupted. IndexUnavailable without a usable index; with `build_missing` a missing
    index is built from settings.seeds_dir first (NothingToIndex when that folder has no documents)."""
    if store_version(settings) is None and not build_missing:
        raise IndexUnavailable(missing_index_message(settings))
    started = time.perf_counter()
    encoders, tokenizer = open_encoders(settings), open_tokenizer(settings)
    if store_version(settings) is None:
        paths = indexable_files(settings.seeds_dir, settings.uploads_dir)
        logger.info("索引不存在，正在从 %s 构建…", settings.seeds_dir)
        report = build_index(paths, settings, encoders, tokenizer, progress=True, with_uploads=True)
        if not report.corpus.documents:
            raise NothingToIndex("；".join(report.corpus.problems) or f"{settings.seeds_dir} 中没有可读的文档")
        logger.info("已索引 %d 篇文档、%d 个段落", len(report.corpus.documents), len(report.corpus.passages))
    one_thread_per_search()
    app = create_app(settings, encoders, tokenizer)
    manifest = app.state.live.current().searcher.store.manifest
    logger.info(
        "已加载 %d 篇文档、%d 个段落（索引版本 %s，用时 %.1f 秒）→ http://%s:%d",
        manifest["document_count"],
        manifest["passage_count"],
        app.state.live.current().version,
        time.perf_counter() - started,
        settings.host,
        settings.port,
    )
    # No `server: uvicorn` header: what runs behind the port is nobody's business. On SIGTERM requests
    # still running after the grace are cancelled, then the lifespan kills the parse children: a stop
    # never waits for an upload's parse.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level.lower(),
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
