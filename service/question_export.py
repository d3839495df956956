"""Users' questions as an eval set: linked questions with their passage, 「文件中没有」 ones as off-topic.

Rows have the format of eval/questions.jsonl (eval/questions.py): each linked question names its
passage by a snippet that lies inside one sentence and occurs in exactly one passage of the index,
so `python -m eval.run --questions FILE` scores them however the documents are cut later.
"""

from collections.abc import Iterable, Sequence

from service.links import Link, passage_key
from service.records import Passage
from service.text import sentence_spans

SENTENCE_END = "。！？；!?;\n\r"  # what a snippet must not cross (eval/questions.py)
SNIPPET_CHARS = (12, 20, 32)  # the shortest unique one wins: short snippets survive small edits


def unique_snippet(passage: Passage, texts: Sequence[str]) -> str | None:
    """A piece of one of the passage's sentences that occurs in exactly one of `texts` (the index's passages)."""
    for start, end in sentence_spans(passage.text):
        sentence = passage.text[start:end].strip().rstrip(SENTENCE_END)
        if any(mark in sentence for mark in SENTENCE_END):
            continue
        for length in SNIPPET_CHARS:
            snippet = sentence[:length]
            if len(snippet) >= 6 and sum(snippet in text for text in texts) == 1:
                return snippet
    return None


def exported_questions(
    passages: Iterable[Passage], links: Sequence[Link], out_of_scope: Sequence[tuple[str, str]], since: str = ""
) -> tuple[list[dict], list[str]]:
    """Eval rows for the links and the (question, marked_at) marks made since an ISO date, and the
    questions that could not be exported (a passage gone, or no snippet naming it alone)."""
    passages = list(passages)
    texts = [passage.text for passage in passages]
    by_key = {passage_key(passage): passage for passage in passages}
    rows, skipped = [], []
    seen: set[str] = set()
    for link in links:
        if link.created_at < since or link.question in seen:
            continue
        passage = by_key.get(link.key)
        snippet = unique_snippet(passage, texts) if passage else None
        if snippet is None:
            skipped.append(link.question)
            continue
        seen.add(link.question)
        rows.append(
            {"id": f"linked-{link.link_id}", "question": link.question, "kind": "colloquial",
             "relevant": [snippet], "split": "test"}
        )  # fmt: skip
    for number, (question, marked_at) in enumerate(out_of_scope, start=1):
        if marked_at >= since and question not in seen:
            seen.add(question)
            rows.append({"id": f"out-of-scope-{number}", "question": question, "kind": "near_domain",
                         "relevant": [], "split": "test"})  # fmt: skip
    return rows, skipped
