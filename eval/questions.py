"""The eval set: questions labelled by snippets of their relevant passages, and its validator.

Every snippet must lie inside one sentence and occur in exactly one passage of the seed index, so a
snippet names one passage however the documents are cut. `python -m eval.questions` checks the file
against the seeds and prints the counts per kind and split; `eval.run` refuses to score a set that
fails the check.
"""

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service.records import Passage

QUESTIONS_FILE = Path(__file__).resolve().parent / "questions.jsonl"
KINDS = ("lexical", "paraphrase", "multi", "offtopic")
SPLITS = ("dev", "test")
FIELDS = ("id", "question", "kind", "relevant", "split")
# A snippet inside one sentence stays inside one passage and one embedded sentence unit.
SENTENCE_END = frozenset("。！？；!?;\n\r")
MULTI_MIN_SNIPPETS = 2


class QuestionSetError(Exception):
    """The eval set is malformed or does not match the seed passages; lists every offender."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the eval set:\n" + "\n".join(problems))


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    kind: str
    relevant: tuple[str, ...]  # snippets, each occurring in exactly one passage
    split: str


def record_problems(where: str, row: object) -> list[str]:
    """What is wrong with one parsed line of the questions file (empty when nothing)."""
    if not isinstance(row, dict) or any(name not in row for name in FIELDS):
        return [f"{where}: needs the fields {', '.join(FIELDS)}"]
    problems = []
    relevant = row["relevant"]
    if not isinstance(row["question"], str) or not row["question"].strip():
        problems.append(f"{where}: empty question")
    if row["kind"] not in KINDS:
        problems.append(f"{where}: kind {row['kind']!r} is not one of {KINDS}")
    if row["split"] not in SPLITS:
        problems.append(f"{where}: split {row['split']!r} is not one of {SPLITS}")
    if not isinstance(relevant, list) or not all(isinstance(snippet, str) for snippet in relevant):
        return [*problems, f"{where}: relevant must be a list of strings"]
    if (row["kind"] == "offtopic") != (not relevant):
        problems.append(f"{where}: offtopic questions, and only they, have no relevant snippets")
    if row["kind"] == "multi" and len(relevant) < MULTI_MIN_SNIPPETS:
        problems.append(f"{where}: a multi question needs at least {MULTI_MIN_SNIPPETS} snippets")
    if len(set(relevant)) != len(relevant):
        problems.append(f"{where}: repeated snippet")
    for snippet in relevant:
        if breaks := sorted(SENTENCE_END & set(snippet)):
            problems.append(f"{where}: 「{snippet}」 crosses a sentence end {breaks}")
    return problems


def load_questions(path: Path = QUESTIONS_FILE, split: str | None = None) -> list[Question]:
    """Questions of the file, optionally only one split; QuestionSetError when a line is malformed."""
    questions, problems, seen = [], [], Counter()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"line {number}: not JSON ({error})")
            continue
        where = f"line {number} ({row.get('id') if isinstance(row, dict) else '?'})"
        line_problems = record_problems(where, row)
        problems.extend(line_problems)
        if not line_problems:
            seen.update([("id", row["id"]), ("question", row["question"])])
            questions.append(Question(row["id"], row["question"], row["kind"], tuple(row["relevant"]), row["split"]))
    problems.extend(f"duplicate {field} {value!r}" for (field, value), count in seen.items() if count > 1)
    if problems:
        raise QuestionSetError(problems)
    return [q for q in questions if split in (None, "all", q.split)]


def relevant_passages(
    questions: Sequence[Question], passages: Sequence[Passage]
) -> tuple[dict[str, set[str]], list[str]]:
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


def checked_labels(questions: Sequence[Question], passages: Sequence[Passage]) -> dict[str, set[str]]:
    """Relevant passage ids per question; QuestionSetError listing every snippet that is not unique."""
    labels, problems = relevant_passages(questions, passages)
    if problems:
        raise QuestionSetError(problems)
    return labels


def counts_table(questions: Sequence[Question], passages: Sequence[Passage]) -> str:
    """Questions per kind and split, and labelled passages per document, as plain text."""
    counts = Counter((q.kind, q.split) for q in questions)
    lines = [f"{'kind':<12}{'dev':>6}{'test':>6}{'total':>7}"]
    for kind in (*KINDS, "all"):
        dev = sum(n for (k, s), n in counts.items() if s == "dev" and kind in (k, "all"))
        test = sum(n for (k, s), n in counts.items() if s == "test" and kind in (k, "all"))
        lines.append(f"{kind:<12}{dev:>6}{test:>6}{dev + test:>7}")
    labels, _ = relevant_passages(questions, passages)
    doc_of = {p.passage_id: p.doc_id for p in passages}
    per_document = Counter(doc_of[pid] for ids in labels.values() for pid in ids)
    documents = dict.fromkeys(doc_of.values())
    lines.append("labelled passages per document: " + ", ".join(f"{d}={per_document[d]}" for d in documents))
    return "\n".join(lines)


def main() -> int:
    """Check the questions file against the seed passages; exit 1 listing the offenders."""
    from service.config import Settings
    from service.engine import source_files
    from service.ingest import ingest_paths

    settings = Settings()
    passages = ingest_paths(source_files(settings.seeds_dir)).passages
    try:
        questions = load_questions()
        checked_labels(questions, passages)
    except QuestionSetError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{QUESTIONS_FILE}: {len(questions)} questions, {len(passages)} seed passages")
    print(counts_table(questions, passages))
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
