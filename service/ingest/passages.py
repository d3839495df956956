"""Cut sectioned paragraphs into passages with offsets into the cleaned document text.

Bound: a passage holds at most PASSAGE_MAX characters: a 250-character passage is one argument of a
speech, which is the unit users want back, and it stays far inside the models' 512-token window
(about one token per Chinese character). Longer paragraphs are cut at sentence ends into near-equal
pieces. A single sentence may be longer, up to text.SENTENCE_MAX: past that it is cut at clause
marks, and text with no marks at all into equal pieces.
"""

import hashlib
from datetime import UTC, datetime

from service.ingest.structure import outline
from service.records import Block, Document, Passage
from service.text import equal_share, sentence_spans

PASSAGE_MAX = 250


def split_paragraph(text: str, limit: int = PASSAGE_MAX) -> list[tuple[int, int]]:
    """Near-equal pieces of at most `limit` characters, cut only between sentences."""
    if len(text) <= limit:
        return [(0, len(text))]
    target = equal_share(len(text), limit)
    pieces: list[tuple[int, int]] = []
    start = end = 0
    for s_start, s_end in sentence_spans(text):
        if end > start and (s_end - start > limit or end - start >= target):
            pieces.append((start, end))
            start = s_start
        end = s_end
    pieces.append((start, end))
    return pieces


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_document(doc_id: str, source: str, blocks: list[Block]) -> tuple[Document, list[Passage]]:
    """A Document (cleaned text joined by newlines) and its passages; blocks must be cleaned."""
    doc_outline = outline(blocks, fallback_title=source.rsplit(".", 1)[0])
    text = "\n".join(p.text for p in doc_outline.paragraphs)
    passages: list[Passage] = []
    offset = 0
    for number, paragraph in enumerate(doc_outline.paragraphs, start=1):
        if paragraph.is_passage:
            for start, end in split_paragraph(paragraph.text):
                piece = paragraph.text[start:end]
                lead = len(piece) - len(piece.lstrip())
                piece = piece.strip()
                passages.append(
                    Passage(
                        passage_id=f"{doc_id}:{len(passages) + 1}",
                        doc_id=doc_id,
                        title=doc_outline.title,
                        section_path=paragraph.section_path,
                        paragraph=number,
                        start=offset + start + lead,
                        end=offset + start + lead + len(piece),
                        text=piece,
                        doc_type=doc_outline.doc_type,
                        year=doc_outline.year,
                        page=paragraph.page,
                    )
                )
        offset += len(paragraph.text) + 1
    sections = tuple(dict.fromkeys(p.section for p in passages if p.section))
    document = Document(
        doc_id=doc_id,
        title=doc_outline.title,
        source=source,
        text=text,
        doc_type=doc_outline.doc_type,
        year=doc_outline.year,
        level=doc_outline.level,
        content_hash=content_hash(text),
        added_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sections=sections,
    )
    return document, passages
