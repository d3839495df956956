"""Collections: named sets of documents, and the document list as users browse it.

A real organisation keeps its own Party-building files apart from the laws and rules it consults: each
document belongs to one collection (`Document.collection`, DEFAULT_COLLECTION unless the upload names
one), and a search can be scoped to some of them (`stores.Filters.collections`; how a scope ranks is
in service/search.py). A collection exists while it holds a document; there is nothing to create.
"""

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from service.records import DEFAULT_COLLECTION, Document

__all__ = ["DEFAULT_COLLECTION", "InvalidCollection", "UnknownCollections", "checked_collection"]

MAX_NAME_CHARS = 32
# \w is Unicode: Chinese letters and digits count, so 「法律法规」 or 「2024年_支部」 are names.
NAME = re.compile(r"[\w\-]+")
DIGITS = re.compile(r"(\d+)")
SORTS = ("added", "-added", "title", "-title", "passages", "-passages", "year", "-year")
MAX_PAGE_SIZE = 200


class InvalidCollection(ValueError):
    """A collection name that breaks the naming rule; the message (Chinese) says which part."""


class UnknownCollections(ValueError):
    """A scope names collections the index does not hold (a typo would otherwise search nothing)."""

    def __init__(self, names: Sequence[str], known: Iterable[str]) -> None:
        self.names = list(names)
        existing = "、".join(sorted(known)) or "无"
        super().__init__(f"没有这些文档集：{'、'.join(self.names)}（现有：{existing}）")


def checked_collection(name: str) -> str:
    """The name, NFC-normalised and stripped; InvalidCollection when empty, too long or with other characters.

    Names appear in URLs, CLI arguments, Milvus expressions and file contents: letters (any script),
    digits, `_` and `-` are safe in all of them.
    """
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise InvalidCollection("文档集名称不能为空")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidCollection(f"文档集名称不能超过 {MAX_NAME_CHARS} 个字符（收到 {len(name)} 个）")
    if not NAME.fullmatch(name):
        raise InvalidCollection(f"文档集名称「{name}」只能包含汉字、字母、数字、下划线（_）和连字符（-）")
    return name


def checked_scope(names: Iterable[str] | None) -> frozenset[str] | None:
    """A scope as given (None: every collection), each name checked; an empty list is no scope either."""
    if names is None:
        return None
    scope = frozenset(checked_collection(name) for name in names)
    return scope or None


@dataclass(frozen=True)
class CollectionCount:
    name: str
    documents: int
    passages: int


def collection_counts(documents: Iterable[Document], passage_counts: Iterable[int]) -> dict[str, CollectionCount]:
    """Each collection's documents and passages, by name (DEFAULT_COLLECTION first, then by name)."""
    totals: dict[str, list[int]] = {}
    for document, passages in zip(documents, passage_counts, strict=True):
        total = totals.setdefault(document.collection, [0, 0])
        total[0] += 1
        total[1] += passages
    names = sorted(totals, key=lambda name: (name != DEFAULT_COLLECTION, name))
    return {name: CollectionCount(name, *totals[name]) for name in names}


@dataclass(frozen=True)
class DocumentQuery:
    """One page of the document list: a collection, a text the title or doc id contains, an order."""

    collection: str | None = None
    text: str = ""
    sort: str = "added"  # one of SORTS; "-" first: descending
    page: int = 1
    page_size: int | None = None  # None: every matching document on one page


def natural(text: str) -> list[str | int]:
    """A sort key that puts 「第2号」 before 「第10号」: runs of digits compare as numbers."""
    return [int(part) if position % 2 else part for position, part in enumerate(DIGITS.split(text.lower()))]


def sort_key(field: str):
    if field == "title":
        return lambda row: (natural(row["title"]), row["doc_id"])
    if field == "year":  # documents without a year last, also in descending order (see document_page)
        return lambda row: row["year"] or 0
    return lambda row: row["passages"]


def document_page(rows: Sequence[dict], query: DocumentQuery) -> dict:
    """The rows (store.document_rows, in the order added) filtered, sorted and cut to one page, with the total."""
    text = query.text.strip().lower()
    found = [
        row
        for row in rows
        if (query.collection is None or row["collection"] == query.collection)
        and (not text or text in row["title"].lower() or text in row["doc_id"].lower())
    ]
    field = query.sort.removeprefix("-")
    descending = query.sort.startswith("-")
    if field == "added":
        found = found[::-1] if descending else found
    else:
        found = sorted(found, key=sort_key(field), reverse=descending)  # sorted is stable: ties keep added order
        if field == "year":
            found = [row for row in found if row["year"]] + [row for row in found if not row["year"]]
    size = query.page_size or max(1, len(found))
    pages = max(1, -(-len(found) // size))
    start = (query.page - 1) * size
    return {
        "documents": found[start : start + size],
        "total": len(found),
        "page": query.page,
        "page_size": size,
        "pages": pages,
    }
