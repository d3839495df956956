"""The eval set: questions labelled by snippets of their relevant passages, and the validator."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service.records import Passage

QUESTIONS_FILE = Path(__file__).resolve().parent / "questions.jsonl"
KINDS = ("lexical", "paraphrase", "multi", "offtopic")


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    kind: str
    relevant: tuple[str, ...]  # snippets, each occurring in exactly one passage
    split: str


def load_questions(path: Path = QUESTIONS_FILE, split: str | None = None) -> list[Question]:
    """Questions of the file, optionally only one split (dev or test)."""
    questions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            questions.append(Question(row["id"], row["question"], row["kind"], tuple(row["relevant"]), row["split"]))
    return [q for q in questions if split in (None, q.split)]


def relevant_passages(questions: Sequence[Question], passages: Sequence[Passage]) -> tuple[dict[str, set[str]], list[str]]:
    """Passage ids each question names, and a problem line for every snippet not in exactly one passage."""
    labels: dict[str, set[str]] = {}
    problems = []
    for question in questions:
        labels[question.id] = set()
        for snippet in question.relevant:
            owners = [p.passage_id for p in passages if snippet in p.text]
            if len(owners) != 1:
                problems.append(f"{question.id}: 「{snippet}」 occurs in {len(owners)} passages {owners[:3]}")
            labels[question.id].update(owners[:1])
    return labels, problems
