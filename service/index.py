"""Build, save and load the search index: unit vectors, BM25, passage table, manifest.

Layout of the index directory (every version complete before it becomes current):

    CURRENT                 name of the live version, replaced atomically (os.replace)
    .lock                   flock held by writers (build, add, remove) so they never interleave
    PENDING_DONE            the version whose pending.json (below) has been carried out
    versions/<name>/        manifest.json; per model (manifest order) vectors-<i>.f16 and, for large
                            indexes, ann-<i>.faiss (service/vectors.py); units.npy (unit id at each
                            position), rows.npy (first unit position of each passage), doc_rows.npy
                            (document number of each passage); bm25/; passages.sqlite (text, metadata
                            and BM25 tokens by row); documents.jsonl; pending.json (file moves outside
                            the index that belong to this version)

Everything large is memory-mapped or read per hit, so loading costs the same at any size and
nothing per question loops over the corpus in Python. A version is written once, streaming
passages in chunks (VersionWriter), and never changed: a change writes a new version, copying
the kept passages' rows, vectors and approximate-index entries (service/vectors.py).

A crash at any moment leaves CURRENT naming a complete version: the old one or the new one.
Files that belong to a change but live elsewhere (users' kept originals) are staged before the
switch and moved into place after it, as listed in the version's pending.json; a writer killed in
between leaves them to the next writer (complete_pending, run under the lock), so the change is
applied whole once CURRENT names it, and not at all before.
The manifest lists every other file of its version with its size and a checksum, verified at load
(see file_checksums), so a damaged or truncated file refuses to load instead of serving garbage.
"""

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import bm25s
import faiss
import numpy as np

from service.atomic import fsync_directory, fsync_tree, write_atomic
from service.records import Document, Passage
from service.vectors import UnitVectors, ann_file, matrix_file, open_matrix, updated_ann

# 3: float16 unit matrices, approximate index when large, passages in SQLite; 4: every document names
# its collection, and Milvus versions hold a collection field and word counts per collection.
FORMAT_VERSION = 4
REBUILD_HINT = "请运行 `make index`（或 `dangjian-qa index`）重新构建索引"
# Checksums at load must stay cheap for a million-passage index (gigabytes of vectors): files up to
# FULL_HASH_BYTES are hashed whole; larger ones by SAMPLE_BLOCKS blocks spread evenly over the file
# (first and last included), which catches truncation, zeroed or overwritten regions of any size
# above one block gap, in about 4 MB of reads per file. Sizes are always compared.
FULL_HASH_BYTES = 64 * 2**20
SAMPLE_BLOCKS, SAMPLE_BYTES = 64, 64 * 1024
PENDING = "pending.json"
PENDING_DONE = "PENDING_DONE"  # the version whose pending.json has been carried out
COPY_CHUNK = 20_000  # passages copied at a time from the previous version by a change
LOCK_POLL_SECONDS = 0.2
# What a damaged or vanished version raises while loading (sqlite3: a missing or garbled passage table).
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError, sqlite3.Error)


class IndexUnavailable(Exception):
    """The index is missing, corrupt or does not match the configured model; says how to fix it.

    `folder` is the server's folder the message names: the CLI shows it, HTTP users get
    `public_message`, which names only its last part (a version's name, `index`).
    """

    def __init__(self, message: str, folder: Path | None = None) -> None:
        super().__init__(message)
        self.public_message = message.replace(str(folder), folder.name) if folder is not None else message


class IndexBusy(Exception):
    """Another writer held the index lock for longer than the wait allowed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"另一个索引写入操作（构建、添加或删除文档）仍在进行，已等待 {seconds:g} 秒；请稍后重试")


class PassageTable(Sequence[Passage]):
    """The passages of a version by row, read from SQLite on demand (only the hits are ever read).

    Thread-safe: any thread may read; one connection, opened here (never later, when the version's
    folder may be gone), is shared under a lock. Its owner calls close() once no reader is left.
    """

    def __init__(self, path: Path, count: int) -> None:
        uri = f"file:{quote(str(path))}?mode=ro&immutable=1"  # a version never changes once written
        self.count = count
        self.lock = threading.Lock()
        # Reads are a few rows by key, far shorter than a search: one connection serves every thread.
        self.database = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self.database.execute("SELECT 1 FROM passages LIMIT 1").fetchall()  # opens the file now

    def query(self, sql: str, parameters: Sequence[object]) -> list[tuple]:
        with self.lock:
            return self.database.execute(sql, parameters).fetchall()

    def close(self) -> None:
        with self.lock:
            self.database.close()

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, row):  # type: ignore[override]  # rows only, no slices
        if not isinstance(row, int | np.integer) or not -self.count <= row < self.count:
            raise IndexError(row)
        return self.many([int(row) % self.count])[int(row) % self.count]

    def with_tokens(self, rows: Iterable[int]) -> dict[int, tuple[Passage, list[str]]]:
        """The rows' passages and BM25 tokens, in one query per 500 rows (SQLite's parameter limit)."""
        wanted = sorted({int(row) for row in rows})
        found: dict[int, tuple[Passage, list[str]]] = {}
        for start in range(0, len(wanted), 500):
            batch = wanted[start : start + 500]
            query = f"SELECT row, passage, tokens FROM passages WHERE row IN ({','.join('?' * len(batch))})"
            for row, passage, tokens in self.query(query, batch):
                found[row] = (passage_from_json(passage), json.loads(tokens))
        return found

    def many(self, rows: Iterable[int]) -> dict[int, Passage]:
        return {row: passage for row, (passage, _) in self.with_tokens(rows).items()}

    def rows_of(self, doc_id: str) -> list[int]:
        query = "SELECT row FROM passages WHERE doc_id = ? ORDER BY row"
        return [row for (row,) in self.query(query, (doc_id,))]

    def chunks(self, size: int = COPY_CHUNK) -> Iterator[list[tuple[int, Passage, list[str]]]]:
        """Every row in order, `size` at a time, with its passage and tokens."""
        for start in range(0, self.count, size):
            query = "SELECT row, passage, tokens FROM passages WHERE row >= ? AND row < ? ORDER BY row"
            rows = self.query(query, (start, start + size))
            yield [(row, passage_from_json(passage), json.loads(tokens)) for row, passage, tokens in rows]

    def __iter__(self) -> Iterator[Passage]:
        for chunk in self.chunks():
            yield from (passage for _, passage, _ in chunk)


def as_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def passage_from_json(text: str) -> Passage:
    fields = json.loads(text)
    return Passage(**{**fields, "section_path": tuple(fields["section_path"])})


def document_from_fields(fields: dict) -> Document:
    """A Document from its asdict() fields read back from JSON (lists become tuples again)."""
    return Document(**{**fields, "sections": tuple(fields["sections"])})


@dataclass
class SearchIndex:
    """A loaded version: small arrays in memory, everything large memory-mapped or read per hit.

    Any thread may read it; close() is for its owner (a store), once nothing reads it any more.
    """

    manifest: dict
    documents: dict[str, Document]  # in the order they were added
    passages: PassageTable
    unit_ids: np.ndarray  # int64, ascending: the id of the unit at each position
    row_starts: np.ndarray  # int64 (passages + 1): units of row r are positions row_starts[r]:row_starts[r+1]
    doc_rows: np.ndarray  # int32: number (in `documents` order) of each passage's document
    vectors: dict[str, UnitVectors]  # model name -> its unit vectors, same positions for every model
    bm25: bm25s.BM25
    version: str = ""  # its name under versions/
    reader_hold: int | None = None  # descriptor with a shared flock on the manifest (see hold_version)

    def close(self) -> None:
        """Close its files and let writers prune the version; call once nothing searches it any more."""
        self.passages.close()
        for vectors in self.vectors.values():
            vectors.close()
        if self.reader_hold is not None:
            os.close(self.reader_hold)  # releases the flock
            self.reader_hold = None

    def rows_of_positions(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.row_starts, positions, side="right") - 1

    def positions_of_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The unit positions of the rows (in order, ascending per row) and where each row's begin."""
        starts, ends = self.row_starts[rows], self.row_starts[rows + 1]
        counts = ends - starts
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        positions = np.repeat(starts - offsets, counts) + np.arange(int(counts.sum()))
        return positions, offsets


def build_bm25(tokens: list[list[str]]) -> bm25s.BM25:
    bm25 = bm25s.BM25()
    # An empty token keeps bm25s happy with passages that have no tokens left after stopwords.
    bm25.index([passage_tokens or [""] for passage_tokens in tokens], show_progress=False)
    return bm25


def corpus_fingerprint(documents: Iterable[Document], extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for document in sorted(documents, key=lambda d: d.doc_id):
        digest.update(f"{document.doc_id}\0{document.content_hash}\n".encode())
    return digest.hexdigest()


@dataclass
class Chunk:
    """Passages written together: their tokens, and every model's vectors of all their units in order.

    `unit_ids` are given for passages kept from the previous version (their ids stay); new passages'
    units get ids after the highest ever used.
    """

    passages: list[Passage]
    tokens: list[list[str]]
    unit_counts: list[int]
    vectors: dict[str, np.ndarray]
    unit_ids: np.ndarray | None = None


def new_chunk(passages: list[Passage], unit_vectors: dict[str, list[np.ndarray]], tokens: list[list[str]]) -> Chunk:
    """A Chunk of new passages from per-passage unit vectors (as service.embed returns them)."""
    counts = [len(units) for units in next(iter(unit_vectors.values()), [])]
    vectors = {
        model: np.concatenate(units) if units else np.zeros((0, 1), dtype=np.float32)
        for model, units in unit_vectors.items()
    }
    return Chunk(passages, tokens, counts, vectors)


def kept_chunks(index: "SearchIndex", drop_doc_ids: set[str]) -> Iterator[Chunk]:
    """The passages of `index` not in the dropped documents, with their vectors and unit ids, in chunks."""
    for rows in index.passages.chunks():
        kept = [(row, passage, tokens) for row, passage, tokens in rows if passage.doc_id not in drop_doc_ids]
        if not kept:
            continue
        row_numbers = np.array([row for row, _, _ in kept], dtype=np.int64)
        positions, _ = index.positions_of_rows(row_numbers)
        counts = (index.row_starts[row_numbers + 1] - index.row_starts[row_numbers]).tolist()
        yield Chunk(
            [passage for _, passage, _ in kept],
            [tokens for _, _, tokens in kept],
            counts,
            {model: np.asarray(vectors.matrix[positions]) for model, vectors in index.vectors.items()},
            np.asarray(index.unit_ids[positions]),
        )


class UnitIds:
    """Ids of the units a writer receives: kept passages keep theirs, new ones get ids after the highest
    ever used (never reused, so an approximate index can drop and add units in place)."""

    def __init__(self, first_unit_id: int) -> None:
        self.next_unit_id = first_unit_id
        self.new_seen = False

    def of(self, chunk: Chunk) -> np.ndarray:
        units = sum(chunk.unit_counts)
        if chunk.unit_ids is None:
            ids = np.arange(self.next_unit_id, self.next_unit_id + units, dtype=np.int64)
            self.next_unit_id += units
            self.new_seen = True
            return ids
        if self.new_seen:
            raise ValueError("kept passages must be written before new ones")
        self.next_unit_id = max(self.next_unit_id, int(chunk.unit_ids.max(initial=-1)) + 1)
        return chunk.unit_ids.astype(np.int64)


class VersionWriter:
    """Writes one version into a staging folder, chunk by chunk: memory holds one chunk and the tokens."""

    def __init__(self, staging: Path, models: list[dict], first_unit_id: int) -> None:
        self.staging = staging
        self.models = models
        self.ids = UnitIds(first_unit_id)
        self.database = sqlite3.connect(staging / "passages.sqlite")
        self.database.execute("PRAGMA journal_mode = OFF")  # a half-written staging folder is thrown away
        self.database.execute("PRAGMA synchronous = OFF")  # fsync_tree makes the finished file durable
        self.database.execute(
            "CREATE TABLE passages (row INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, passage TEXT, tokens TEXT)"
        )
        self.matrices = [(staging / matrix_file(i)).open("wb") for i in range(len(models))]
        self.tokens: list[list[str]] = []
        self.doc_ids: list[str] = []
        self.unit_ids: list[np.ndarray] = []
        self.unit_counts: list[int] = []
        self.kept_units = 0  # units copied from the previous version, all before the new ones

    def append(self, chunk: Chunk) -> None:
        units = sum(chunk.unit_counts)
        ids = self.ids.of(chunk)
        if chunk.unit_ids is not None:
            self.kept_units += units
        first_row = len(self.doc_ids)
        self.database.executemany(
            "INSERT INTO passages VALUES (?, ?, ?, ?)",
            [
                (first_row + offset, p.doc_id, as_json(asdict(p)), as_json(t))
                for offset, (p, t) in enumerate(zip(chunk.passages, chunk.tokens, strict=True))
            ],
        )
        for handle, model in zip(self.matrices, self.models, strict=True):
            if units:
                handle.write(np.ascontiguousarray(chunk.vectors[model["name"]], dtype=np.float16).tobytes())
        self.tokens += chunk.tokens
        self.doc_ids += [passage.doc_id for passage in chunk.passages]
        self.unit_ids.append(ids)
        self.unit_counts += chunk.unit_counts

    def finish(self, documents: list[Document], previous: "SearchIndex | None") -> dict:
        """Write what depends on every passage (BM25, arrays, approximate indexes); the manifest's fields."""
        self.database.execute("CREATE INDEX passages_doc ON passages (doc_id)")
        self.database.commit()
        self.database.close()
        for handle in self.matrices:
            handle.close()
        build_bm25(self.tokens).save(str(self.staging / "bm25"), show_progress=False)
        unit_ids = np.concatenate([np.zeros(0, dtype=np.int64), *self.unit_ids])
        number_of = {document.doc_id: number for number, document in enumerate(documents)}
        np.save(self.staging / "units.npy", unit_ids)
        np.save(self.staging / "rows.npy", np.concatenate([[0], np.cumsum(self.unit_counts)]).astype(np.int64))
        np.save(self.staging / "doc_rows.npy", np.array([number_of[d] for d in self.doc_ids], dtype=np.int32))
        ann_built = {}
        for position, model in enumerate(self.models):
            matrix = open_matrix(self.staging / matrix_file(position), len(unit_ids), int(model["dimension"]))
            before = previous.vectors[model["name"]] if previous is not None else None
            trained = previous.manifest.get("ann_trained_units", {}).get(model["name"], 0) if previous else 0
            ann, trained = updated_ann(before, trained, matrix, unit_ids, self.kept_units)
            if ann is not None:
                faiss.write_index(ann, str(self.staging / ann_file(position)))
                ann_built[model["name"]] = trained
        return {
            "passage_count": len(self.doc_ids),
            "unit_count": len(unit_ids),
            "document_count": len(documents),
            "next_unit_id": self.ids.next_unit_id,
            "ann_trained_units": ann_built,
        }


def new_manifest(documents: list[Document], models: list[dict], settings_note: str, fields: dict) -> dict:
    """A version's manifest (either store): what built it, checked at load (check_manifest), and `fields`."""
    return {
        **fields,
        "format_version": FORMAT_VERSION,
        "models": [
            {key: m[key] for key in ("name", "weights_sha256", "engine")} | {"dimension": int(m["dimension"])}
            for m in models
        ],
        "corpus_fingerprint": corpus_fingerprint(documents, settings_note),
        "settings": settings_note,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_version(
    index_dir: Path,
    documents: list[Document],
    chunks: Iterable[Chunk],
    models: list[dict],
    settings_note: str,
    previous: "SearchIndex | None" = None,
    extra: dict | None = None,
    moves: Sequence[tuple[Path, Path]] = (),
    removals: Sequence[Path] = (),
) -> Path:
    """Write a new complete version from chunks (kept passages first), then point CURRENT at it.

    `previous` is the version a change starts from (its approximate indexes are updated, not
    retrained); `extra` adds manifest fields. `moves` (staged file -> its place) and `removals` are
    files outside the index that belong to the change: recorded in the version's pending.json and
    carried out just after the switch (see complete_pending). A failure before the switch (a full
    disk) removes the half-written version: CURRENT, and the index it names, are untouched.
    """
    versions = index_dir / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    staging = versions / f".staging-{name}"
    staging.mkdir()
    first_unit_id = int(previous.manifest.get("next_unit_id", 0)) if previous is not None else 0
    try:
        writer = VersionWriter(staging, models, first_unit_id)
        for chunk in chunks:
            writer.append(chunk)
        counts = writer.finish(documents, previous)
        write_jsonl(staging / "documents.jsonl", [asdict(d) for d in documents])
        if moves or removals:
            pending = {"moves": [[str(a), str(b)] for a, b in moves], "removals": [str(path) for path in removals]}
            (staging / PENDING).write_text(json.dumps(pending, ensure_ascii=False, indent=2), encoding="utf-8")
        manifest = new_manifest(documents, models, settings_note, {**(extra or {}), **counts})
        manifest["files"] = file_checksums(staging)
        (staging / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2))
        fsync_tree(staging)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        converted = disk_full_as_oserror(error, staging)
        if converted is error:
            raise
        raise converted from error
    version_dir = versions / name
    staging.rename(version_dir)
    fsync_directory(versions)
    previous_name = current_version(index_dir)
    write_atomic(index_dir / "CURRENT", f"{name}\n".encode())
    prune_versions(index_dir, keep={name, previous_name or ""})
    complete_pending(index_dir)
    return version_dir


def disk_full_as_oserror(error: BaseException, path: Path) -> BaseException:
    """A full disk as OSError(ENOSPC) whoever reported it: FAISS (RuntimeError) and SQLite use their own words."""
    words = str(error)
    full = (isinstance(error, RuntimeError) and os.strerror(errno.ENOSPC) in words) or (
        isinstance(error, sqlite3.OperationalError) and "disk is full" in words
    )
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) if full else error


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def file_digest(path: Path, size: int) -> str:
    """sha256 of the whole file up to FULL_HASH_BYTES, else of SAMPLE_BLOCKS evenly spread blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
            return digest.hexdigest()
        step = (size - SAMPLE_BYTES) / (SAMPLE_BLOCKS - 1)
        for number in range(SAMPLE_BLOCKS):
            handle.seek(round(number * step))
            digest.update(handle.read(SAMPLE_BYTES))
    return "sampled:" + digest.hexdigest()


def file_checksums(version_dir: Path) -> dict[str, dict]:
    """Size and file_digest of every file of a version but the manifest, by path inside the version."""
    checksums = {}
    for path in sorted(p for p in version_dir.rglob("*") if p.is_file() and p.name != "manifest.json"):
        size = path.stat().st_size
        checksums[path.relative_to(version_dir).as_posix()] = {"bytes": size, "sha256": file_digest(path, size)}
    return checksums


def verify_files(version_dir: Path, manifest: dict) -> None:
    """IndexUnavailable unless every file the manifest lists has its size and checksum.

    Indexes written before checksums existed have no "files" entry and are loaded as before.
    """
    for name, expected in manifest.get("files", {}).items():
        path = version_dir / name
        size = path.stat().st_size if path.is_file() else None
        if size != expected["bytes"] or file_digest(path, size) != expected["sha256"]:
            found = "文件缺失" if size is None else f"大小 {size} 字节，应为 {expected['bytes']} 字节，或内容已变"
            message = f"索引已损坏（{version_dir}：{name} 校验失败，{found}）。{REBUILD_HINT}"
            raise IndexUnavailable(message, version_dir)


def complete_pending(index_dir: Path) -> None:
    """Carry out the live version's pending.json: move staged files into place, delete removed ones.

    Idempotent (a staged file already moved is gone), so every writer runs it under the lock: the
    one that switched CURRENT, and the next one after a writer killed between switch and moves. Once
    done it is marked done (PENDING_DONE names the version), so a later writer never replays its
    removals over a file written since (an original restored by adding the same file again).
    """
    name = current_version(index_dir)
    plan_path = index_dir / "versions" / (name or "-") / PENDING
    done_path = index_dir / PENDING_DONE
    if name is None or not plan_path.is_file() or (done_path.is_file() and done_path.read_text().strip() == name):
        return
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    carry_out([(Path(a), Path(b)) for a, b in plan["moves"]], [Path(path) for path in plan["removals"]])
    write_atomic(done_path, f"{name}\n".encode())


def carry_out(moves: Sequence[tuple[Path, Path]], removals: Sequence[Path]) -> None:
    """Move staged files into place and delete removed ones, durably; idempotent (a moved file is gone)."""
    folders = set()
    for staged, target in moves:
        if staged.exists():
            os.replace(staged, target)
            folders.add(target.parent)
    for removed in removals:
        try:
            removed.unlink(missing_ok=True)
        except OSError as error:
            if error.errno != errno.ENAMETOOLONG:  # such a name cannot exist, so it is gone
                raise
        folders.add(removed.parent)
    for folder in folders:
        if folder.is_dir():
            fsync_directory(folder)


def hold_version(version_dir: Path) -> int:
    """A descriptor holding a shared flock on the version's manifest, for as long as it stays open.

    Readers (servers, in any process) hold it while they serve the version; prune_versions leaves a
    version that anyone holds on disk, so a request started on it finishes on it.
    """
    descriptor = os.open(version_dir / "manifest.json", os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def prune_versions(index_dir: Path, keep: set[str]) -> None:
    """Remove old versions no reader holds (hold_version), and abandoned staging folders; the previous
    version always stays, and one still read is removed by a later writer once its readers let go."""
    for path in (index_dir / "versions").iterdir():
        if path.name in keep:
            continue
        try:
            descriptor = os.open(path / "manifest.json", os.O_RDONLY)
        except OSError:  # a staging folder, or a version broken without its manifest
            shutil.rmtree(path, ignore_errors=True)
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(path, ignore_errors=True)  # under the lock: no reader can start holding it
        except BlockingIOError:
            pass  # still read
        finally:
            os.close(descriptor)


@contextmanager
def writer_lock(index_dir: Path, create: bool = False, timeout: float = 600.0) -> Iterator[None]:
    """Exclusive lock for writers of index_dir (a killed holder releases it with its process).

    Readers never take it. Without `create` a missing index_dir is IndexUnavailable, so adding
    to or removing from an index that does not exist never creates one. A writer waits at most
    `timeout` seconds for another one to finish, then gets IndexBusy.
    """
    if create:
        index_dir.mkdir(parents=True, exist_ok=True)
    elif not index_dir.is_dir():
        raise IndexUnavailable(f"索引不存在：{index_dir}。{REBUILD_HINT}", index_dir)
    with (index_dir / ".lock").open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise IndexBusy(timeout) from None
                time.sleep(LOCK_POLL_SECONDS)
        try:
            remove_stale_staging(index_dir)
            complete_pending(index_dir)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_staging(index_dir: Path) -> None:
    """Staging folders seen under the lock belong to a writer that died; CURRENT never names them."""
    versions = index_dir / "versions"
    for staging in versions.glob(".staging-*") if versions.is_dir() else ():
        shutil.rmtree(staging, ignore_errors=True)


def current_version(index_dir: Path) -> str | None:
    """Name of the live version, or None when there is no index."""
    try:
        return (index_dir / "CURRENT").read_text().strip() or None
    except FileNotFoundError:
        return None


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def model_names(models: list[dict]) -> str:
    return " + ".join(f"{m['name']}（权重 {str(m['weights_sha256'])[:12]}，引擎 {m.get('engine')}）" for m in models)


def check_manifest(manifest: dict, models: list[dict], settings_note: str) -> None:
    """IndexUnavailable unless the index was built by this format, these models and these settings."""
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexUnavailable(
            f"索引格式版本 {manifest.get('format_version')} 与本程序的版本 {FORMAT_VERSION} 不一致，{REBUILD_HINT}"
        )
    # The engine counts too: int8 and float32 vectors of one text differ slightly.
    keys = ("name", "weights_sha256", "engine", "dimension")
    built = [tuple(m.get(key) for key in keys) for m in manifest.get("models", [])]
    wanted = [tuple(m[key] for key in keys) for m in models]
    if built != wanted:
        raise IndexUnavailable(
            f"索引由模型 {model_names(manifest.get('models', []))} 构建，当前配置的模型是 {model_names(models)}；"
            f"{REBUILD_HINT}，或把 DJQA_MODELS 改回原来的模型"
        )
    if manifest.get("settings") != settings_note:
        # The dictionary, stopwords or embedded text changed since the build: tokens or vectors are stale.
        raise IndexUnavailable(
            f"索引构建时的设置（{manifest.get('settings')}）与当前设置（{settings_note}）不同，{REBUILD_HINT}"
        )


def open_unit_vectors(version_dir: Path, position: int, model: dict, unit_ids: np.ndarray) -> UnitVectors:
    ann_path = version_dir / ann_file(position)
    ann = faiss.read_index(str(ann_path)) if ann_path.is_file() else None
    return UnitVectors.open(version_dir / matrix_file(position), unit_ids, int(model["dimension"]), ann)


def load_index(index_dir: Path, models: list[dict], settings_note: str) -> SearchIndex:
    """Open the live version; any problem becomes IndexUnavailable naming the fix.

    `models` and `settings_note` describe what the caller would search with; an index built with
    anything else is refused, since its vectors or tokens would not match the queries'.
    """
    name = current_version(index_dir)
    if name is None:
        raise IndexUnavailable(f"索引不存在：{index_dir}。{REBUILD_HINT}", index_dir)
    version_dir = index_dir / "versions" / name
    reader_hold = None
    try:
        reader_hold = hold_version(version_dir)  # first: a writer may prune the version meanwhile
        manifest = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
        check_manifest(manifest, models, settings_note)
        verify_files(version_dir, manifest)
        documents = [document_from_fields(fields) for fields in read_jsonl(version_dir / "documents.jsonl")]
        unit_ids = np.load(version_dir / "units.npy")  # in memory: searched per question
        row_starts = np.load(version_dir / "rows.npy")
        doc_rows = np.load(version_dir / "doc_rows.npy")
        # The models' vectors load side by side (FAISS reads without the GIL): a million passages'
        # approximate indexes are 2 GB, a second and a half of a cold start when read one after the other.
        with ThreadPoolExecutor(len(manifest["models"])) as pool:
            opening = {
                model["name"]: pool.submit(open_unit_vectors, version_dir, position, model, unit_ids)
                for position, model in enumerate(manifest["models"])
            }
            bm25 = bm25s.BM25.load(str(version_dir / "bm25"), mmap=True, show_progress=False)
            vectors = {name: future.result() for name, future in opening.items()}
        passage_count = manifest["passage_count"]
        counts_agree = len(row_starts) - 1 == passage_count == bm25.scores["num_docs"] == len(doc_rows)
        units_agree = int(row_starts[-1]) == len(unit_ids) == manifest["unit_count"]
        if not counts_agree or not units_agree:
            raise IndexUnavailable(f"索引已损坏（{version_dir}：各文件的段落数不一致）。{REBUILD_HINT}", version_dir)
        if len(documents) != manifest["document_count"]:
            raise IndexUnavailable(f"索引已损坏（{version_dir}：文档数与清单不一致）。{REBUILD_HINT}", version_dir)
        passages = PassageTable(version_dir / "passages.sqlite", passage_count)
    except BaseException as error:
        if reader_hold is not None:
            os.close(reader_hold)
        if isinstance(error, IndexUnavailable) or not isinstance(error, LOAD_ERRORS):
            raise
        message = f"索引已损坏（{version_dir}：{type(error).__name__}: {error}）。{REBUILD_HINT}"
        raise IndexUnavailable(message, version_dir) from error
    return SearchIndex(
        manifest=manifest,
        documents={document.doc_id: document for document in documents},
        passages=passages,
        unit_ids=unit_ids,
        row_starts=row_starts,
        doc_rows=doc_rows,
        vectors=vectors,
        bm25=bm25,
        version=name,
        reader_hold=reader_hold,
    )
