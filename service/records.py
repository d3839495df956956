"""The small frozen records that flow through the pipeline."""

from dataclasses import dataclass, field

# Block.heading_level of the document title when the file format marks it (docx "Title" style).
TITLE_LEVEL = 0
# The collection of a document added without naming one (service/collections.py).
DEFAULT_COLLECTION = "default"


@dataclass(frozen=True)
class Block:
    """One line or paragraph of a source file, before sectioning."""

    text: str
    # Heading level given by the file format (docx style, markdown #); None means detect from text.
    heading_level: int | None = None
    page: int | None = None
    # A row of a table: body text, never a heading (cells are short and unpunctuated).
    table_row: bool = False


@dataclass(frozen=True)
class Document:
    """A cleaned source document and what we know about it."""

    doc_id: str
    title: str
    source: str
    text: str
    doc_type: str | None = None
    year: int | None = None
    level: str | None = None
    content_hash: str = ""
    added_at: str = ""
    sections: tuple[str, ...] = ()
    collection: str = DEFAULT_COLLECTION  # the named set it belongs to; a search can be scoped to some


@dataclass(frozen=True)
class Passage:
    """A retrievable unit: one body paragraph, or a sentence-aligned piece of a long one."""

    passage_id: str
    doc_id: str
    title: str
    section_path: tuple[str, ...]
    paragraph: int
    start: int
    end: int
    text: str
    doc_type: str | None = None
    year: int | None = None
    page: int | None = None

    @property
    def section(self) -> str:
        return " › ".join(self.section_path)


@dataclass(frozen=True)
class ModelEvidence:
    """Where one embedding model ranked a passage, and its cosine (models' cosines are not comparable)."""

    model: str
    rank: int
    score: float


@dataclass(frozen=True)
class Hit:
    """A ranked passage with the evidence for its rank."""

    passage: Passage
    score: float
    dense_rank: int | None = None
    dense_score: float | None = None
    lexical_rank: int | None = None
    lexical_score: float | None = None
    matched_terms: tuple[str, ...] = ()
    highlights: tuple[tuple[int, int], ...] = field(default_factory=tuple)
    models: tuple[ModelEvidence, ...] = ()  # each embedding model's rank and cosine
