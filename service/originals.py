"""The kept originals of users' documents, so that `dangjian-qa index` rebuilds them with the seeds.

An original lives at uploads_dir/<doc_id><suffix>: the doc id is already reduced to letters, digits,
`_` and `-` and to at most ingest.MAX_DOC_ID_BYTES, so the user's file name never becomes a path and
the name always fits the file system. Writers call these under the index's writer lock. A change's
originals are part of its index version: each is first copied to a hidden `.incoming-*` file
(stage_original), and the version's pending moves put it in place once the version is live
(index.complete_pending). A leftover `.incoming-*` that no live version names belongs to a change
that never went live, and the next writer removes it.
"""

import os
import re
import uuid
from pathlib import Path

from service.atomic import copy_atomic, fsync_directory
from service.ingest.read import SUPPORTED_SUFFIXES

INCOMING_PREFIX = ".incoming-"
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


def stage_original(
    uploads_dir: Path, doc_id: str, source: Path, name: str
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Copy `source` (the user's file `name`) beside the document's original place, synced.

    Returns the moves and removals that make it the document's original (for index.write_version):
    the staged copy replaces the original of this suffix; originals of other suffixes go.
    """
    target = original_path(uploads_dir, doc_id, Path(name).suffix)
    uploads_dir.mkdir(parents=True, exist_ok=True)
    staged = uploads_dir / f"{INCOMING_PREFIX}{uuid.uuid4().hex}{target.suffix}"
    with source.open("rb") as data, staged.open("xb") as handle:
        try:
            while block := data.read(2**20):
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
    others = [path for path in originals_of(uploads_dir, doc_id) if path != target]
    return [(staged, target)], others


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
