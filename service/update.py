"""Users' own documents: add and remove files incrementally, each change saved atomically.

Changes never touch the live version (servers may be searching it): they write a new version,
copying the kept passages' rows and vectors from the live one in chunks (service/index.py). Only
new passages are embedded; their units get ids after the highest id ever used (kept in the manifest
as next_unit_id), so an id is never reused and a large index's approximate search is updated in
place: removed units leave its lists, new ones join them (service/vectors.py). BM25 has no
incremental API and is rebuilt from the stored token lists (about 0.1 s for the seeds, 1 s per 10k
passages).

A writer holds an exclusive flock on index_dir/.lock from loading the index to pointing CURRENT at
the new version, so two writers never interleave; readers never take it. Any `.staging-*` folder
found under the lock was left by a killed writer and is removed; CURRENT never names one.

The bytes of each added file are kept as settings.uploads_dir/<doc_id><suffix> (service/originals.py),
so `dangjian-qa index` rebuilds users' documents with the seeds. Keeping them is part of the change:
they are staged before the new version is saved and moved into place by its pending moves, so a
failure to store them (a full disk) leaves the index untouched, and a kill after the switch leaves
the moves to the next writer.
"""

import filecmp
import itertools
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.collections import DEFAULT_COLLECTION
from service.config import Settings
from service.embed import Encoders, embed_with_settings
from service.engine import ingest_limits, open_store, parse_limits, save_version, store_lock, store_version
from service.index import new_chunk
from service.ingest import Limits, ProcessLimits, doc_id_for, ingest_file
from service.ingest.read import FileTooLarge, OverLimit, ReadError, UnsupportedFileType
from service.links import Link, grouped, links_change, load_links, with_questions
from service.originals import (
    collection_file,
    keep_original,
    kept_original,
    originals_of,
    remove_incoming,
    stage_original,
)
from service.records import Document, Passage
from service.stores import Store
from service.tokenize import WordTokenizer

# What happened to each file; the API maps them to 201 / 409 / 415 / 413 / 413 / 422.
ADDED, REPLACED, DUPLICATE, UNSUPPORTED, TOO_LARGE, OVER_LIMIT, FAILED = (
    "added", "replaced", "duplicate", "unsupported", "too_large", "over_limit", "failed",
)  # fmt: skip
NOT_ADDED = (UNSUPPORTED, TOO_LARGE, OVER_LIMIT, FAILED)  # the file itself is the problem
EMBED_BATCH = 16  # passages embedded between two progress reports (a few seconds of encoding)
APPLIED_JOBS_KEPT = 100  # ids of the last upload jobs whose change a manifest holds
Progress = Callable[[int, int], None]  # (passages embedded, passages in all)


class UpdateError(Exception):
    """A change to the document set that cannot be made; nothing was changed."""


class ReadAbandoned(UpdateError):
    """Whoever asked for the files to be read is gone (an upload's client hung up): the rest are not read."""


class UnknownDocuments(UpdateError):
    """Some doc ids are not in the index."""

    def __init__(self, doc_ids: Sequence[str]) -> None:
        self.doc_ids = list(doc_ids)
        super().__init__(f"索引中没有这些文档：{'、'.join(self.doc_ids)}（用 `dangjian-qa docs` 查看已有文档）")


class WouldEmptyIndex(UpdateError):
    """Removing every document would leave an index that cannot be searched."""

    def __init__(self) -> None:
        super().__init__("不能删除全部文档，索引至少要保留一篇；要从头重建请运行 `make index`")


@dataclass(frozen=True)
class FileOutcome:
    """One file of an add: its status (ADDED, REPLACED, DUPLICATE, …), document and reason."""

    name: str
    status: str
    doc_id: str | None = None
    passages: int = 0
    reason: str = ""
    path: Path | None = field(default=None, compare=False)  # the file read (for uploads: the temp copy)

    def doc_and_path(self) -> tuple[str, Path]:
        """Its document and file, for an outcome that has both (a file that was read: added, replaced,
        a duplicate)."""
        assert self.doc_id is not None and self.path is not None, self
        return self.doc_id, self.path


@dataclass
class AddReport:
    """Outcome of every file; `documents` (the ones added or replaced) and `version` when the index changed."""

    outcomes: list[FileOutcome] = field(default_factory=list)
    encoded_texts: int = 0  # texts of new passages handed to the encoder (cached ones cost nothing)
    seconds: float = 0.0
    documents: dict[str, Document] = field(default_factory=dict)
    version: str | None = None  # the new version's name

    def having(self, *statuses: str) -> list[FileOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status in statuses]

    @property
    def changed(self) -> bool:
        return bool(self.having(ADDED, REPLACED))


def user_file_name(name: str) -> str:
    """The last component of a user-supplied name ("C:\\材料\\a.docx" -> "a.docx"); never a path to open."""
    return re.split(r"[\\/]", name)[-1].strip() or "document"


def as_named(files: Sequence[Path | tuple[str, Path]]) -> list[tuple[str, Path]]:
    return [(user_file_name(item[0]), item[1]) if isinstance(item, tuple) else (item.name, item) for item in files]


def read_files(
    files: Sequence[tuple[str, Path]],
    limits: Limits,
    process: ProcessLimits | None,
    progress: bool = False,
    abandoned: Callable[[], bool] | None = None,
) -> tuple[list[tuple[str, Path, Document, list[Passage]]], list[FileOutcome]]:
    """Ingest each file (in a child process under `process`, when given); failures become outcomes
    with the reason (type, size, limits, unreadable). ReadAbandoned before a file once `abandoned()`."""
    read: list[tuple[str, Path, Document, list[Passage]]] = []
    failed: list[FileOutcome] = []
    for name, path in tqdm(files, desc="读取文件", unit="个", disable=not progress or len(files) < 2):
        if abandoned is not None and abandoned():
            raise ReadAbandoned("上传请求的客户端已断开，其余文件未读取")
        try:
            document, passages = ingest_file(path, name=name, limits=limits, process=process)
        except UnsupportedFileType as error:
            failed.append(FileOutcome(name, UNSUPPORTED, reason=str(error)))
        except FileTooLarge as error:
            failed.append(FileOutcome(name, TOO_LARGE, reason=str(error)))
        except OverLimit as error:
            failed.append(FileOutcome(name, OVER_LIMIT, reason=str(error)))
        except ReadError as error:
            failed.append(FileOutcome(name, FAILED, reason=str(error)))
        else:
            read.append((name, path, document, passages))
    return read, failed


@dataclass
class Change:
    """A change to the document set: documents dropped, and new documents with their embedded passages."""

    drop_doc_ids: set[str]
    documents: list[Document] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    unit_vectors: dict[str, list[np.ndarray]] = field(default_factory=dict)
    tokens: list[list[str]] = field(default_factory=list)


def save_change(
    store: Store,
    change: Change,
    settings: Settings,
    extra: dict | None = None,
    moves: Sequence[tuple[Path, Path]] = (),
    removals: Sequence[Path] = (),
) -> tuple[str, dict]:
    """Write `store` without the dropped documents, plus the new ones, as the new live version;
    its name and manifest."""
    documents = {doc_id: d for doc_id, d in store.documents.items() if doc_id not in change.drop_doc_ids}
    documents |= {document.doc_id: document for document in change.documents}
    chunks = store.chunks(change.drop_doc_ids)
    if change.passages:
        chunks = itertools.chain(chunks, [new_chunk(change.passages, change.unit_vectors, change.tokens)])
    manifest = store.manifest
    extra = {
        **{key: manifest[key] for key in ("applied_jobs",) if key in manifest},
        **(extra or {}),
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    models, note = manifest["models"], manifest["settings"]
    return save_version(settings, list(documents.values()), chunks, models, note, store, extra, moves, removals)


def classify_files(
    index: Store,
    files: Sequence[Path | tuple[str, Path]],
    settings: Settings,
    progress: bool = False,
    collection: str = DEFAULT_COLLECTION,
    abandoned: Callable[[], bool] | None = None,
) -> tuple[dict[str, tuple[Document, list[Passage]]], AddReport]:
    """Read the files and sort them against `index`, embedding nothing: the accepted documents by doc id
    (ADDED or REPLACED), in `collection`, and a report with every file's outcome.

    Content already in the index (same cleaned-text hash, in any collection) is DUPLICATE; a file whose
    doc id (from its name) exists with other content REPLACES that document, also into another
    collection: doc ids name one document across the whole index. ReadAbandoned once `abandoned()`
    (see read_files).
    """
    read, failed = read_files(as_named(files), ingest_limits(settings), parse_limits(settings), progress, abandoned)
    report = AddReport()
    owner_of_hash = {document.content_hash: doc_id for doc_id, document in index.documents.items()}
    accepted: dict[str, tuple[Document, list[Passage]]] = {}
    for name, path, document, passages in read:
        owner = owner_of_hash.get(document.content_hash)
        if owner is not None:
            reason = f"{name}：内容与已有文档 {owner} 相同，已跳过"
            report.outcomes.append(FileOutcome(name, DUPLICATE, owner, reason=reason, path=path))
            continue
        if document.doc_id in accepted:
            # a.docx and a.pdf in one batch: which one the user meant is a guess, so neither wins silently.
            first = accepted[document.doc_id][0].source
            reason = f"{name}：与同批的 {first} 对应同一文档编号 {document.doc_id}，已跳过"
            report.outcomes.append(FileOutcome(name, FAILED, document.doc_id, reason=reason, path=path))
            continue
        accepted[document.doc_id] = (replace(document, collection=collection), passages)
        owner_of_hash[document.content_hash] = document.doc_id
        status = REPLACED if document.doc_id in index.documents else ADDED
        report.outcomes.append(FileOutcome(name, status, document.doc_id, len(passages), path=path))
    report.outcomes += failed
    return accepted, report


def embed_in_batches(
    passages: list[Passage],
    settings: Settings,
    encoders: Encoders,
    tokenizer: WordTokenizer,
    progress: bool = False,
    on_progress: Progress | None = None,
) -> tuple[dict[str, list[np.ndarray]], list[list[str]]]:
    """embed_and_tokenize in batches of EMBED_BATCH passages, reporting (done, total) after each."""
    unit_vectors: dict[str, list[np.ndarray]] = {name: [] for name in encoders}
    tokens: list[list[str]] = []
    with tqdm(total=len(passages), desc="编码段落", unit="段", disable=not progress) as bar:
        for start in range(0, len(passages), EMBED_BATCH):
            batch = passages[start : start + EMBED_BATCH]
            vectors, batch_tokens = embed_with_settings(batch, encoders, tokenizer, settings)
            for name, model_vectors in vectors.items():
                unit_vectors[name] += model_vectors
            tokens += batch_tokens
            bar.update(len(batch))
            if on_progress:
                on_progress(len(tokens), len(passages))
    return unit_vectors, tokens


def add_documents(
    index: Store,
    files: Sequence[Path | tuple[str, Path]],
    settings: Settings,
    encoders: Encoders,
    tokenizer: WordTokenizer,
    progress: bool = False,
    on_progress: Progress | None = None,
    collection: str = DEFAULT_COLLECTION,
    links: Sequence[Link] = (),
) -> tuple[Change, AddReport]:
    """The change that adds the files to `index` (see classify_files) into `collection`, embedded;
    `files` are paths or (user's file name, path on disk). The change is empty when no file is accepted.
    A replaced document's passages whose text is unchanged keep their linked questions (`links`)."""
    started = time.perf_counter()
    accepted, report = classify_files(index, files, settings, progress, collection)
    change = Change(set(accepted) & set(index.documents))
    if accepted:
        change.documents = [document for document, _ in accepted.values()]
        passages = [passage for _, doc_passages in accepted.values() for passage in doc_passages]
        change.passages = with_questions(passages, links)
        change.unit_vectors, change.tokens = embed_in_batches(
            change.passages, settings, encoders, tokenizer, progress, on_progress
        )
        report.encoded_texts = sum(len(vectors) for vectors in next(iter(change.unit_vectors.values()), []))
        report.documents = {document.doc_id: document for document in change.documents}
    report.seconds = time.perf_counter() - started
    return change, report


def removal(index: Store, doc_ids: Sequence[str]) -> Change:
    """The change that removes the documents; UnknownDocuments (nothing removed) if any id is not there."""
    unknown = [doc_id for doc_id in dict.fromkeys(doc_ids) if doc_id not in index.documents]
    if unknown:
        raise UnknownDocuments(unknown)
    if set(doc_ids) >= index.documents.keys():
        raise WouldEmptyIndex()
    return Change(set(doc_ids))


# --- persisted changes: lock, load the current version, change, save ------------------------------


def add_files(
    settings: Settings,
    encoders: Encoders,
    tokenizer: WordTokenizer,
    files: Sequence[Path | tuple[str, Path]],
    progress: bool = False,
    on_progress: Progress | None = None,
    job_id: str | None = None,
    before_save: Callable[[AddReport], None] | None = None,
    collection: str = DEFAULT_COLLECTION,
) -> AddReport:
    """Add files to the index on disk, into `collection`, and save the new version before returning.

    For uploads pass (original name, temp path): the name gives the doc id and the messages only.
    The files' bytes are kept as originals by the same change (see service/originals.py).
    `on_progress(done, total)` follows the passages being embedded. A `job_id` is recorded in the new
    version's manifest (applied_jobs), and `before_save` sees the report just before the switch, so a
    job killed around the switch can tell afterwards whether its change went live (service/jobs.py).
    Raises IndexUnavailable when there is no usable index, OSError when the change cannot be stored
    (nothing changed then); per-file problems are in the report.
    """
    with store_lock(settings):
        remove_incoming(settings.uploads_dir)
        with closing(open_store(settings, encoders)) as index:  # its files now, not at garbage collection
            report = add_to(
                index, files, settings, encoders, tokenizer, progress, on_progress, job_id, before_save, collection
            )
        for outcome in report.outcomes:
            if missing_original(settings, outcome):
                keep_original(settings.uploads_dir, *outcome.doc_and_path(), outcome.name)
    return report


def add_to(
    index: Store,
    files: Sequence[Path | tuple[str, Path]],
    settings: Settings,
    encoders: Encoders,
    tokenizer: WordTokenizer,
    progress: bool,
    on_progress: Progress | None,
    job_id: str | None,
    before_save: Callable[[AddReport], None] | None,
    collection: str,
) -> AddReport:
    """add_files' change to `index`, under the writer lock: embed, stage the originals and the linked
    questions that stay, save the version."""
    links = load_links(settings.uploads_dir)
    change, report = add_documents(
        index, files, settings, encoders, tokenizer, progress, on_progress, collection, links
    )
    if not report.changed:
        return report
    extra = {}
    if job_id is not None:
        extra["applied_jobs"] = [*index.manifest.get("applied_jobs", []), job_id][-APPLIED_JOBS_KEPT:]
    if before_save is not None:
        before_save(report)
    moves: list[tuple[Path, Path]] = []
    removals: list[Path] = []
    with debris_unless_live(settings, moves):
        for outcome in report.having(ADDED, REPLACED):
            doc_id, path = outcome.doc_and_path()
            staged, others = stage_original(settings.uploads_dir, doc_id, path, outcome.name, collection)
            moves += staged
            removals += others
        moves += links_change(settings.uploads_dir, links, grouped(change.passages, change.drop_doc_ids))
        report.version, _ = save_change(index, change, settings, extra, moves, removals)
    return report


@contextmanager
def debris_unless_live(settings: Settings, moves: list[tuple[Path, Path]]) -> Iterator[None]:
    """Remove the staged copies of `moves` (which the block may still extend) when the block fails
    before its version went live: nothing will ever move them into place."""
    previous = store_version(settings)
    try:
        yield
    except BaseException:
        if store_version(settings) == previous:
            for staged_copy, _ in moves:
                staged_copy.unlink(missing_ok=True)
        raise


def missing_original(settings: Settings, outcome: FileOutcome) -> bool:
    """A duplicate of its own document whose kept original is missing or other bytes.

    That happens when a writer is killed between saving the index and keeping the file; adding the
    same file again is how the user repairs it.
    """
    if outcome.status != DUPLICATE or outcome.path is None or outcome.doc_id != doc_id_for(Path(outcome.name)):
        return False
    kept = kept_original(settings.uploads_dir, outcome.doc_id)
    return kept is None or not filecmp.cmp(kept, outcome.path, shallow=False)


def delete_documents(settings: Settings, encoders: Encoders, doc_ids: Sequence[str]) -> dict:
    """Remove the documents and their linked questions from the store; the new version's manifest,
    live before returning."""
    with store_lock(settings):
        remove_incoming(settings.uploads_dir)
        with closing(open_store(settings, encoders)) as index:
            change = removal(index, doc_ids)
            removals = [
                path
                for doc_id in dict.fromkeys(doc_ids)
                for path in [*originals_of(settings.uploads_dir, doc_id), collection_file(settings.uploads_dir, doc_id)]
            ]
            moves = links_change(settings.uploads_dir, load_links(settings.uploads_dir), {d: [] for d in doc_ids})
            return save_change(index, change, settings, moves=moves, removals=removals)[1]
