"""Serving: load the model, tokenizer and index once, then run the API and the page under uvicorn."""

import time

import uvicorn

from service.config import Settings
from service.engine import NothingToIndex, build_index, indexable_files, open_encoders, open_tokenizer, store_version
from service.http.app import create_app
from service.index import IndexUnavailable
from service.vectors import one_thread_per_search

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
        print(f"索引不存在，正在从 {settings.seeds_dir} 构建…", flush=True)
        report = build_index(paths, settings, encoders, tokenizer, progress=True, with_uploads=True)
        if not report.corpus.documents:
            raise NothingToIndex("；".join(report.corpus.problems) or f"{settings.seeds_dir} 中没有可读的文档")
        print(f"已索引 {len(report.corpus.documents)} 篇文档、{len(report.corpus.passages)} 个段落", flush=True)
    one_thread_per_search()
    app = create_app(settings, encoders, tokenizer)
    manifest = app.state.live.current().searcher.store.manifest
    print(
        f"已加载 {manifest['document_count']} 篇文档、{manifest['passage_count']} 个段落"
        f"（用时 {time.perf_counter() - started:.1f} 秒）→ http://{settings.host}:{settings.port}",
        flush=True,
    )
    # No `server: uvicorn` header: what runs behind the port is nobody's business. On SIGTERM requests
    # still running after the grace are cancelled, then the lifespan kills the parse children: a stop
    # never waits for an upload's parse.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
