"""Questions linked to passages by an administrator: kept beside the originals, embedded as units.

A link names its passage by document id and the hash of the passage's text, not by passage id
(`doc:n` moves when a document is cut differently or re-uploaded with an edit), so links survive
`dangjian-qa index` and re-uploads: a passage whose text is unchanged keeps its questions, and a
link whose passage is gone is dropped with the change that removed it.

The links live in uploads_dir/linked-questions.json. A change of the links is part of an index
version, like the originals: the new file is staged as `.incoming-*` and moved into place by the
version's pending moves (service/index.py), so the file and the live version never disagree after
a crash. Writers call these under the index's writer lock; readers read the file as it is.
"""

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from service.atomic import atomic_file
from service.originals import INCOMING_PREFIX
from service.records import Passage

LINKS_FILE = "linked-questions.json"
# Each linked question is a unit for every model, and the passage's record (text, questions, tokens)
# must stay inside one Milvus VARCHAR (64 KB): at most 20 questions and 3,000 characters a passage.
MAX_LINKS_PER_PASSAGE = 20
MAX_LINKED_CHARS = 3_000


@dataclass(frozen=True)
class Link:
    """One question linked to one passage (named by doc_id and text_hash)."""

    link_id: str
    doc_id: str
    text_hash: str
    question: str
    passage_id: str  # the passage's id when linked; shown, but the key is (doc_id, text_hash)
    created_at: str

    @property
    def key(self) -> tuple[str, str]:
        return self.doc_id, self.text_hash


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def passage_key(passage: Passage) -> tuple[str, str]:
    """What a link names a passage by: its document and its text."""
    return passage.doc_id, text_hash(passage.text)


def links_path(uploads_dir: Path) -> Path:
    return uploads_dir / LINKS_FILE


def load_links(uploads_dir: Path) -> list[Link]:
    """The links in the order they were made (none when the file does not exist)."""
    path = links_path(uploads_dir)
    if not path.is_file():
        return []
    return [Link(**row) for row in json.loads(path.read_text(encoding="utf-8"))]


def new_link(passage: Passage, question: str) -> Link:
    doc_id, digest = passage_key(passage)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return Link(uuid.uuid4().hex[:16], doc_id, digest, question, passage.passage_id, created)


def questions_by_key(links: Iterable[Link]) -> dict[tuple[str, str], tuple[str, ...]]:
    found: dict[tuple[str, str], list[str]] = {}
    for link in links:
        found.setdefault(link.key, []).append(link.question)
    return {key: tuple(dict.fromkeys(questions)) for key, questions in found.items()}


def with_questions(passages: Sequence[Passage], links: Iterable[Link]) -> list[Passage]:
    """The passages, each carrying the questions linked to it (and no others)."""
    by_key = questions_by_key(links)
    return [
        passage if passage.questions == by_key.get(passage_key(passage), ()) else
        replace(passage, questions=by_key.get(passage_key(passage), ()))
        for passage in passages
    ]  # fmt: skip


def kept_links(links: Iterable[Link], passages_of: Mapping[str, Sequence[Passage]]) -> list[Link]:
    """The links whose document is not in `passages_of`, or whose passage is among its passages:
    `passages_of` maps each changed document to its new passages (none when it is removed)."""
    keys = {doc_id: {passage_key(p) for p in passages} for doc_id, passages in passages_of.items()}
    return [link for link in links if link.doc_id not in keys or link.key in keys[link.doc_id]]


def staged_links(uploads_dir: Path, links: Sequence[Link]) -> list[tuple[Path, Path]]:
    """Write `links` beside the links file, synced; the move that makes it the links file (for a version)."""
    uploads_dir.mkdir(parents=True, exist_ok=True)
    staged = uploads_dir / f"{INCOMING_PREFIX}{uuid.uuid4().hex}.json"
    data = json.dumps([asdict(link) for link in links], ensure_ascii=False, indent=1).encode()
    with atomic_file(staged, prefix=INCOMING_PREFIX) as handle:
        handle.write(data)
    return [(staged, links_path(uploads_dir))]


def grouped(passages: Sequence[Passage], doc_ids: Iterable[str]) -> dict[str, list[Passage]]:
    """The passages by document, with an empty list for each of `doc_ids` that has none."""
    by_document: dict[str, list[Passage]] = {doc_id: [] for doc_id in doc_ids}
    for passage in passages:
        by_document.setdefault(passage.doc_id, []).append(passage)
    return by_document


def links_change(
    uploads_dir: Path, links: Sequence[Link], passages_of: Mapping[str, Sequence[Passage]]
) -> list[tuple[Path, Path]]:
    """The staged move of the links file when documents changed and some links went (kept_links), else nothing."""
    kept = kept_links(links, passages_of)
    return staged_links(uploads_dir, kept) if len(kept) != len(links) else []
