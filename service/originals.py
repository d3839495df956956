"""The kept originals of users' documents, so that `dangjian-qa index` rebuilds them with the seeds.

An original lives at uploads_dir/<doc_id><suffix>: the doc id is already reduced to letters, digits,
`_` and `-` and to at most ingest.MAX_DOC_ID_BYTES, so the user's file name never becomes a path and
the name always fits the file system. Writers call these under the index's writer lock. A change's
originals are part of its index version: each is first copied to a hidden `.incoming-*` file
(stage_original), and the version's pending moves put it in place once the version is live
(index.complete_pending). A leftover `.incoming-*` that no live version names belongs to a change
that never went live, and the next writer removes it.

A document's collection (service/collections.py) is kept beside its original as
uploads_dir/<doc_id>.collection (its name in UTF-8), staged and moved with it, so a rebuild puts the
document back in its collection; none means the default collection.
"""

import os
import re
import uuid
from pathlib import Path

from service.atomic import copy_atomic, fsync_directory
from service.collections import DEFAULT_COLLECTION, InvalidCollection, checked_collection
from service.ingest.read import SUPPORTED_SUFFIXES

INCOMING_PREFIX = ".incoming-"
COLLECTION_SUFFIX = ".collection"
SAFE_DOC_ID = re.compile(r"[\w\-]+")


def original_path(uploads_dir: Path, doc_id: str, suffix: str) -> Path:
    """Where the original of a document with this id and suffix is kept."""
    if not SAFE_DOC_ID.fullmatch(doc_id) or suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValueError(f"not a kept-original name: {doc_id!r}{suffix!r}")
    return uploads_dir / f"{doc_id}{suffix.lower()}"


def kept_original(uploads_dir: Path, doc_id: str) -> Path | None:
    """The original kept for a document, if any."""
    return next((path for path in originals_of(uploads_dir, doc_id) if path.is_file()), None)


def originals_of(uploads_dir: Path, doc_id: str) -> list[Path]:
    return [original_path(uploads_dir, doc_id, suffix) for suffix in SUPPORTED_SUFFIXES]


def collection_file(uploads_dir: Path, doc_id: str) -> Path:
    """Where the collection of a kept original is recorded (absent: the default collection)."""
    if not SAFE_DOC_ID.fullmatch(doc_id):
        raise ValueError(f"not a kept-original name: {doc_id!r}")
    return uploads_dir / f"{doc_id}{COLLECTION_SUFFIX}"


def kept_collection(uploads_dir: Path, doc_id: str) -> str:
    """The collection recorded for a kept original; the default one when none (or no valid name) is."""
    try:
        return checked_collection(collection_file(uploads_dir, doc_id).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, InvalidCollection):
        return DEFAULT_COLLECTION


def staged_copy(uploads_dir: Path, suffix: str, write) -> Path:
    """A new `.incoming-*` file written by `write(handle)` and synced (removed again if that fails)."""
    staged = uploads_dir / f"{INCOMING_PREFIX}{uuid.uuid4().hex}{suffix}"
    with staged.open("xb") as handle:
        try:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
    return staged


def stage_original(
    uploads_dir: Path, doc_id: str, source: Path, name: str, collection: str = DEFAULT_COLLECTION
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Copy `source` (the user's file `name`) beside the document's original place, synced, and its
    collection's name beside that.

    Returns the moves and removals that make it the document's original (for index.write_version):
    the staged copy replaces the original of this suffix; originals of other suffixes go, and so does
    the collection file of a document in the default collection.
    """
    target = original_path(uploads_dir, doc_id, Path(name).suffix)
    uploads_dir.mkdir(parents=True, exist_ok=True)

    def copy(handle) -> None:
        with source.open("rb") as data:
            while block := data.read(2**20):
                handle.write(block)

    moves = [(staged_copy(uploads_dir, target.suffix, copy), target)]
    others = [path for path in originals_of(uploads_dir, doc_id) if path != target]
    recorded = collection_file(uploads_dir, doc_id)
    if collection == DEFAULT_COLLECTION:
        others.append(recorded)
    else:
        try:
            staged = staged_copy(uploads_dir, COLLECTION_SUFFIX, lambda handle: handle.write(collection.encode()))
            moves.append((staged, recorded))
        except BaseException:
            moves[0][0].unlink(missing_ok=True)
            raise
    return moves, others


def keep_original(uploads_dir: Path, doc_id: str, source: Path, name: str) -> Path:
    """Copy `source` (the user's file `name`) to the document's original, replacing any older one."""
    target = original_path(uploads_dir, doc_id, Path(name).suffix)
    copy_atomic(source, target, prefix=INCOMING_PREFIX)
    for older in originals_of(uploads_dir, doc_id):  # a.txt replaced by a.docx
        if older != target:
            older.unlink(missing_ok=True)
    fsync_directory(uploads_dir)
    return target


def original_files(uploads_dir: Path) -> list[Path]:
    """The kept originals, in name order (leftover `.incoming-*` files are not originals)."""
    if not uploads_dir.is_dir():
        return []
    return sorted(
        path
        for path in uploads_dir.iterdir()
        if path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES and SAFE_DOC_ID.fullmatch(path.stem)
    )


def remove_incoming(uploads_dir: Path) -> None:
    """Half-written originals of a writer that died; only call under the writer lock."""
    for path in uploads_dir.glob(f"{INCOMING_PREFIX}*") if uploads_dir.is_dir() else ():
        path.unlink(missing_ok=True)
