"""Ingest: file -> blocks (read) -> cleaned blocks (clean) -> sections (structure) -> passages."""

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from service.ingest.clean import clean_blocks
from service.ingest.passages import build_document
from service.ingest.read import NO_LIMITS, Limits, OverLimit, ReadError, read_blocks
from service.records import Document, Passage

__all__ = ["Corpus", "Limits", "OverLimit", "ReadError", "doc_id_for", "ingest_file", "ingest_paths"]

# A doc id names the kept original (<doc_id><suffix>), and file names are at most 255 bytes. 240
# keeps every id of 80 BMP characters (3 bytes each in UTF-8) as it was; 4-byte characters get 60.
MAX_DOC_ID_BYTES = 240
MAX_DOC_ID_CHARS = 80
DIGEST_CHARS = 8  # of the name's sha256, after an id the name cannot give faithfully: 4 billion values


@dataclass
class Corpus:
    """Documents and passages read from files, and the files that could not be read (with why)."""

    documents: list[Document] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def doc_id_for(path: Path) -> str:
    """A stable id from the file name: the same name always maps to the same document.

    The name itself when it can be kept (letters, digits, `_`, `-`; spaces become `_`), at most 80
    characters and MAX_DOC_ID_BYTES bytes of UTF-8. A name that cannot (punctuation or emoji
    replaced, cut at the limit, nothing left) gets `_` and a hash of the whole name after what is
    left of it, so two such names never share an id, and the same name keeps its id.
    Applied to `<doc_id>.txt` it gives back doc_id, so kept originals (service/originals.py) keep their id.
    """
    readable = re.sub(r"\s+", "_", path.stem.strip())
    kept = re.sub(r"[^\w\-]+", "_", readable).strip("_")
    if kept == readable and fits(kept, MAX_DOC_ID_CHARS):
        return kept
    digest = hashlib.sha256(path.stem.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_CHARS]
    room = MAX_DOC_ID_CHARS - DIGEST_CHARS - 1
    cut = kept[:room].encode("utf-8")[: MAX_DOC_ID_BYTES - DIGEST_CHARS - 1].decode("utf-8", errors="ignore")
    return f"{cut.strip('_') or 'document'}_{digest}"


def fits(doc_id: str, max_chars: int) -> bool:
    return 0 < len(doc_id) <= max_chars and len(doc_id.encode("utf-8")) <= MAX_DOC_ID_BYTES


def ingest_file(
    path: Path, doc_id: str | None = None, name: str | None = None, limits: Limits = NO_LIMITS
) -> tuple[Document, list[Passage]]:
    """Read, clean and cut one file; raises ReadError when it holds no usable text, OverLimit past `limits`.

    `name` is the user's file name when `path` is a temporary copy (an upload): it gives the doc id,
    the source and the messages; the path itself is never derived from it.
    """
    name = name or path.name
    blocks = clean_blocks(read_blocks(path, name, limits))
    document, passages = build_document(doc_id or doc_id_for(Path(name)), name, blocks)
    if not passages:
        raise ReadError(f"{name}：没有可检索的正文")
    if limits.passages is not None and len(passages) > limits.passages:
        raise OverLimit(
            f"{name}：切分后有 {len(passages):,} 个段落，超过 {limits.passages:,} 个的上限"
            "（DJQA_MAX_DOCUMENT_PASSAGES），请拆分后再添加"
        )
    return document, passages


def ingest_paths(paths: list[Path]) -> Corpus:
    """Ingest files in order; unreadable ones are reported by name and skipped."""
    corpus = Corpus()
    for path in paths:
        try:
            document, passages = ingest_file(path)
        except ReadError as error:
            corpus.problems.append(str(error))
            continue
        corpus.documents.append(document)
        corpus.passages.extend(passages)
    return corpus
