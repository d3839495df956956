"""Cut sectioned paragraphs into passages with offsets into the cleaned document text.

Bound: a passage holds at most PASSAGE_MAX characters. m3e-small reads 512 tokens (about one token
per Chinese character), and the embedded text also carries the title and section path; more to the
point, a 250-character passage is one argument of a speech, which is the unit users want back.
Longer paragraphs are cut at sentence ends into near-equal pieces; only a single sentence longer
than SENTENCE_MAX (which would overflow the model window) is cut at clause marks.
"""

import hashlib
import math
import re
from datetime import UTC, datetime

from service.ingest.structure import outline
from service.records import Block, Document, Passage

PASSAGE_MAX = 250
SENTENCE_MAX = 400
SENTENCE = re.compile(r".+?(?:[。！？!?；;][”’」』）)]*|$)", re.DOTALL)
CLAUSE = re.compile(r".+?(?:[，,、：:][”’」』）)]*|$)", re.DOTALL)


def sentence_spans(text: str, pattern: re.Pattern[str] = SENTENCE) -> list[tuple[int, int]]:
    """(start, end) of each sentence; sentences past SENTENCE_MAX are cut at clause marks."""
    spans = []
    for match in pattern.finditer(text):
        start, end = match.span()
        if start == end:
            continue
        if end - start > SENTENCE_MAX and pattern is SENTENCE:
            spans += [(start + s, start + e) for s, e in sentence_spans(text[start:end], CLAUSE)]
        else:
            spans.append((start, end))
    return spans


def split_paragraph(text: str, limit: int = PASSAGE_MAX) -> list[tuple[int, int]]:
    """Near-equal pieces of at most `limit` characters, cut only between sentences."""
    if len(text) <= limit:
        return [(0, len(text))]
    target = math.ceil(len(text) / math.ceil(len(text) / limit))
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
