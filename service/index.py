"""Build, save and load the search index: FAISS vectors, BM25 tokens, passage store, manifest.

Layout of the index directory (every version complete before it becomes current):

    CURRENT                 name of the live version, replaced atomically (os.replace)
    .lock                   flock held by writers (build, add, remove) so they never interleave
    PENDING_DONE            the version whose pending.json (below) has been carried out
    versions/<name>/        manifest.json, vectors-<i>.faiss (one per model, in manifest order), bm25/,
                            passages.jsonl, documents.jsonl,
                            pending.json (file moves outside the index that belong to this version)

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
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import bm25s
import faiss
import numpy as np

from service.atomic import fsync_directory, fsync_tree, write_atomic
from service.records import Document, Passage

FORMAT_VERSION = 2  # 2: one vector file per embedding model
REBUILD_HINT = "请运行 `make index`（或 `dangjian-qa index`）重新构建索引"
# Checksums at load must stay cheap for a million-passage index (gigabytes of vectors): files up to
# FULL_HASH_BYTES are hashed whole; larger ones by SAMPLE_BLOCKS blocks spread evenly over the file
# (first and last included), which catches truncation, zeroed or overwritten regions of any size
# above one block gap, in about 4 MB of reads per file. Sizes are always compared.
FULL_HASH_BYTES = 64 * 2**20
SAMPLE_BLOCKS, SAMPLE_BYTES = 64, 64 * 1024
PENDING = "pending.json"
PENDING_DONE = "PENDING_DONE"  # the version whose pending.json has been carried out


class IndexUnavailable(Exception):
    """The index is missing, corrupt or does not match the configured model; says how to fix it."""


@dataclass
class SearchIndex:
    """Everything a search needs, in memory (BM25 arrays memory-mapped when loaded)."""

    manifest: dict
    documents: dict[str, Document]
    passages: list[Passage]
    unit_ids: list[list[int]]  # FAISS ids of the embedded units (passage, sentences) of passages[i]
    tokens: list[list[str]]  # BM25 tokens of passages[i]
    vectors: dict[str, faiss.IndexIDMap2]  # model name -> its vectors of the same units, under the same ids
    bm25: bm25s.BM25


def build_bm25(tokens: list[list[str]]) -> bm25s.BM25:
    bm25 = bm25s.BM25()
    # An empty token keeps bm25s happy with passages that have no tokens left after stopwords.
    bm25.index([passage_tokens or [""] for passage_tokens in tokens], show_progress=False)
    return bm25


def corpus_fingerprint(documents: list[Document], extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for document in sorted(documents, key=lambda d: d.doc_id):
        digest.update(f"{document.doc_id}\0{document.content_hash}\n".encode())
    return digest.hexdigest()


def assemble_index(
    documents: list[Document],
    passages: list[Passage],
    unit_vectors: dict[str, list[np.ndarray]],
    tokens: list[list[str]],
    models: list[dict],
    settings_note: str,
) -> SearchIndex:
    """An in-memory index from passages, their unit vectors (per model) and tokens.

    `models` describes the encoders (name, weights_sha256, dimension), in the order they are configured.
    """
    vectors: dict[str, faiss.IndexIDMap2] = {}
    for model in models:
        vectors[model["name"]] = faiss.IndexIDMap2(faiss.IndexFlatIP(int(model["dimension"])))
    unit_ids: list[list[int]] = []
    next_id = 0
    for units in unit_vectors[models[0]["name"]]:
        unit_ids.append(list(range(next_id, next_id + len(units))))
        next_id += len(units)
    if next_id:
        for name, faiss_index in vectors.items():
            stacked = np.ascontiguousarray(np.concatenate(unit_vectors[name]), dtype=np.float32)
            faiss_index.add_with_ids(stacked, np.arange(next_id, dtype=np.int64))
    manifest = {
        "format_version": FORMAT_VERSION,
        "models": [
            {"name": m["name"], "weights_sha256": m["weights_sha256"], "dimension": int(m["dimension"])} for m in models
        ],
        "passage_count": len(passages),
        "document_count": len(documents),
        "corpus_fingerprint": corpus_fingerprint(documents, settings_note),
        "settings": settings_note,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return SearchIndex(
        manifest=manifest,
        documents={document.doc_id: document for document in documents},
        passages=list(passages),
        unit_ids=unit_ids,
        tokens=tokens,
        vectors=vectors,
        bm25=build_bm25(tokens),
    )


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
            raise IndexUnavailable(f"索引已损坏（{version_dir}：{name} 校验失败，{found}）。{REBUILD_HINT}")


def save_index(
    index: SearchIndex, index_dir: Path, moves: Sequence[tuple[Path, Path]] = (), removals: Sequence[Path] = ()
) -> Path:
    """Write a new complete version, then point CURRENT at it; returns the version directory.

    `moves` (staged file -> its place) and `removals` are files outside the index that belong to the
    change: recorded in the version's pending.json and carried out just after the switch (see
    complete_pending). A failure before the switch (a full disk) removes the half-written version:
    CURRENT, and the index it names, are untouched.
    """
    versions = index_dir / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    staging = versions / f".staging-{name}"
    staging.mkdir()
    try:
        for position, model in enumerate(index.manifest["models"]):
            faiss.write_index(index.vectors[model["name"]], str(staging / vector_file(position)))
        index.bm25.save(str(staging / "bm25"), show_progress=False)
        passage_rows = [
            {**asdict(p), "unit_ids": u, "tokens": t}
            for p, u, t in zip(index.passages, index.unit_ids, index.tokens, strict=True)
        ]
        write_jsonl(staging / "passages.jsonl", passage_rows)
        write_jsonl(staging / "documents.jsonl", [asdict(d) for d in index.documents.values()])
        if moves or removals:
            pending = {"moves": [[str(a), str(b)] for a, b in moves], "removals": [str(path) for path in removals]}
            (staging / PENDING).write_text(json.dumps(pending, ensure_ascii=False, indent=2), encoding="utf-8")
        manifest = {**index.manifest, "files": file_checksums(staging)}
        (staging / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2))
        fsync_tree(staging)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, RuntimeError) and os.strerror(errno.ENOSPC) in str(error):
            # FAISS reports a failed write as RuntimeError with the OS's words: a full disk is still one.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(staging)) from error
        raise
    version_dir = versions / name
    staging.rename(version_dir)
    fsync_directory(versions)
    previous = current_version(index_dir)
    write_atomic(index_dir / "CURRENT", f"{name}\n".encode())
    prune_versions(index_dir, keep={name, previous or ""})
    complete_pending(index_dir)
    return version_dir


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
    folders = set()
    for staged, target in plan["moves"]:
        if Path(staged).exists():
            os.replace(staged, target)
            folders.add(Path(target).parent)
    for removed in map(Path, plan["removals"]):
        try:
            removed.unlink(missing_ok=True)
        except OSError as error:
            if error.errno != errno.ENAMETOOLONG:  # such a name cannot exist, so it is gone
                raise
        folders.add(removed.parent)
    for folder in folders:
        if folder.is_dir():
            fsync_directory(folder)
    write_atomic(done_path, f"{name}\n".encode())


def prune_versions(index_dir: Path, keep: set[str]) -> None:
    """Remove old versions and abandoned staging folders; the previous version stays for readers."""
    for path in (index_dir / "versions").iterdir():
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def writer_lock(index_dir: Path, create: bool = False) -> Iterator[None]:
    """Exclusive lock for writers of index_dir (a killed holder releases it with its process).

    Readers never take it. Without `create` a missing index_dir is IndexUnavailable, so adding
    to or removing from an index that does not exist never creates one.
    """
    if create:
        index_dir.mkdir(parents=True, exist_ok=True)
    elif not index_dir.is_dir():
        raise IndexUnavailable(f"索引不存在：{index_dir}。{REBUILD_HINT}")
    with (index_dir / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
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


def passage_from_row(row: dict) -> Passage:
    fields = {k: v for k, v in row.items() if k not in ("unit_ids", "tokens")}
    return Passage(**{**fields, "section_path": tuple(fields["section_path"])})


def vector_file(position: int) -> str:
    return f"vectors-{position}.faiss"


def model_names(models: list[dict]) -> str:
    return " + ".join(f"{m['name']}（权重 {str(m['weights_sha256'])[:12]}）" for m in models)


def check_manifest(manifest: dict, models: list[dict], settings_note: str) -> None:
    """IndexUnavailable unless the index was built by this format, these models and these settings."""
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexUnavailable(
            f"索引格式版本 {manifest.get('format_version')} 与本程序的版本 {FORMAT_VERSION} 不一致，{REBUILD_HINT}"
        )
    built = [(m.get("name"), m.get("weights_sha256"), m.get("dimension")) for m in manifest.get("models", [])]
    wanted = [(m["name"], m["weights_sha256"], int(m["dimension"])) for m in models]
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


def load_index(index_dir: Path, models: list[dict], settings_note: str) -> SearchIndex:
    """Load the live version; any problem becomes IndexUnavailable naming the fix.

    `models` and `settings_note` describe what the caller would search with; an index built with
    anything else is refused, since its vectors or tokens would not match the queries'.
    """
    name = current_version(index_dir)
    if name is None:
        raise IndexUnavailable(f"索引不存在：{index_dir}。{REBUILD_HINT}")
    version_dir = index_dir / "versions" / name
    try:
        manifest = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
        check_manifest(manifest, models, settings_note)
        verify_files(version_dir, manifest)
        rows = read_jsonl(version_dir / "passages.jsonl")
        documents = [
            Document(**{**d, "sections": tuple(d["sections"])}) for d in read_jsonl(version_dir / "documents.jsonl")
        ]
        vectors = {
            model["name"]: faiss.read_index(str(version_dir / vector_file(position)))
            for position, model in enumerate(manifest["models"])
        }
        bm25 = bm25s.BM25.load(str(version_dir / "bm25"), mmap=True, show_progress=False)
    except IndexUnavailable:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise IndexUnavailable(
            f"索引已损坏（{version_dir}：{type(error).__name__}: {error}）。{REBUILD_HINT}"
        ) from error
    unit_count = sum(len(row["unit_ids"]) for row in rows)
    counts_agree = len(rows) == manifest["passage_count"] == bm25.scores["num_docs"]
    if not counts_agree or any(unit_count != model_vectors.ntotal for model_vectors in vectors.values()):
        raise IndexUnavailable(f"索引已损坏（{version_dir}：各文件的段落数不一致）。{REBUILD_HINT}")
    if len(documents) != manifest["document_count"]:
        raise IndexUnavailable(f"索引已损坏（{version_dir}：文档数与清单不一致）。{REBUILD_HINT}")
    return SearchIndex(
        manifest=manifest,
        documents={document.doc_id: document for document in documents},
        passages=[passage_from_row(row) for row in rows],
        unit_ids=[row["unit_ids"] for row in rows],
        tokens=[row["tokens"] for row in rows],
        vectors=vectors,
        bm25=bm25,
    )


def document_rows(index: SearchIndex) -> list[dict]:
    """The indexed documents as the user manages them, in the order they were added."""
    passage_counts = Counter(passage.doc_id for passage in index.passages)
    return [
        {
            "doc_id": document.doc_id,
            "title": document.title,
            "source": document.source,
            "doc_type": document.doc_type,
            "year": document.year,
            "level": document.level,
            "passages": passage_counts[document.doc_id],
            "characters": len(document.text),
            "added_at": document.added_at,
        }
        for document in index.documents.values()
    ]
