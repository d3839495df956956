"""Chinese text conventions used by every stage: punctuation, sentences, numbered headings, context.

The one place that says which marks end a sentence or a clause. Each stage builds its patterns from
these named sets, so ingest, embedding, answers and the eval validator cut text the same way.
"""

import math
import re

FULL_STOPS = "。！？!?"  # end a sentence
SEMICOLONS = "；;"  # end a sentence of an enumeration (「一是……；二是……」), cut like a full stop
COLONS = "：:"
COMMAS = "，,、"
CLOSERS = "”’」』）)"  # quotes and brackets that stay with the mark before them
SENTENCE_ENDS = FULL_STOPS + SEMICOLONS

SENTENCE_MAX = 400  # a longer "sentence" would overflow the model window: cut it at clause marks
SENTENCE = re.compile(rf".+?(?:[{SENTENCE_ENDS}][{CLOSERS}]*|$)", re.DOTALL)
CLAUSE = re.compile(rf".+?(?:[{COMMAS}{COLONS}][{CLOSERS}]*|$)", re.DOTALL)
SENTENCE_BREAK = re.compile(rf"[{SENTENCE_ENDS}][{CLOSERS}]*|\n")

CN_NUM = "[一二三四五六七八九十百零]+"
# Numbered heading patterns of Chinese official documents, outermost first.
HEADING_LEVELS: tuple[tuple[int, re.Pattern[str]], ...] = (
    (1, re.compile(rf"^(?:{CN_NUM}、|第{CN_NUM}(?:部分|章|篇)\s*)")),
    (2, re.compile(rf"^[（(]{CN_NUM}[）)]")),
    (3, re.compile(rf"^(?:{CN_NUM}[是要][，,：:]?|第{CN_NUM}[，,、：:]|\d{{1,2}}[、.．](?!\d))")),
    (4, re.compile(r"^[（(]\d{1,2}[）)]")),
)

CONTEXT_CHARS = 150


def sentence_spans(text: str, pattern: re.Pattern[str] = SENTENCE) -> list[tuple[int, int]]:
    """(start, end) of each sentence; sentences past SENTENCE_MAX are cut at clause marks, and
    what still runs past it (text without any mark) into near-equal pieces."""
    spans = []
    for match in pattern.finditer(text):
        start, end = match.span()
        if start == end:
            continue
        if end - start <= SENTENCE_MAX:
            spans.append((start, end))
        elif pattern is SENTENCE:
            spans += [(start + s, start + e) for s, e in sentence_spans(text[start:end], CLAUSE)]
        else:
            spans += equal_pieces(start, end, SENTENCE_MAX)
    return spans


def equal_share(length: int, limit: int) -> int:
    """The size of each of the fewest near-equal pieces of at most `limit` that make up `length`."""
    return math.ceil(length / math.ceil(length / limit))


def equal_pieces(start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """[start, end) cut into the fewest near-equal pieces of at most `limit` characters.

    A page of characters without a single mark (a scan's text layer, a pasted table) would otherwise
    be one passage: shown whole, and read whole by the embedding model's tokenizer.
    """
    size = equal_share(end - start, limit)
    return [(first, min(first + size, end)) for first in range(start, end, size)]


def numbered_level(text: str) -> int | None:
    """Outline level (1 = 一、 … 4 = (1)) of a line that opens with a heading number, else None."""
    for level, pattern in HEADING_LEVELS:
        if pattern.match(text):
            return level
    return None


def context_around(text: str, start: int, end: int, limit: int = CONTEXT_CHARS) -> tuple[str, str]:
    """Up to `limit` characters of text before and after [start, end), cut at sentence ends."""
    before = text[max(0, start - limit) : start]
    if start > limit:
        first_end = SENTENCE_BREAK.search(before)
        before = before[first_end.end() :] if first_end else "…" + before.lstrip()
    after = text[end : end + limit]
    if end + limit < len(text):
        ends = [match.end() for match in SENTENCE_BREAK.finditer(after) if after[: match.end()].strip()]
        after = after[: ends[-1]] if ends else after.rstrip() + "…"
    return before.strip(), after.strip()
