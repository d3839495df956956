"""The eval set: questions labelled by snippets of their relevant passages, and its validator.

Every snippet must lie inside one sentence and occur in exactly one passage of the seed index, so a
snippet names one passage however the documents are cut. A question may also list `facts`:
alternative strings, any of which in an answer means its key fact was given; each must occur in one
of the question's relevant passages. `python -m eval.questions` checks the file against the seeds
and prints the counts per kind and split with the mean bigram overlap of each kind; `eval.run`
refuses to score a set that fails the check.
"""

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service.records import Passage

QUESTIONS_FILE = Path(__file__).resolve().parent / "questions.jsonl"
# Phrased like the documents (lexical, paraphrase, multi), then as users type them (the hard kinds).
HARD_KINDS = ("colloquial", "short", "long", "fact", "cross")
ON_TOPIC_KINDS = ("lexical", "paraphrase", "multi", *HARD_KINDS)
# Clearly unrelated (weather, cooking …), and health-system or Party questions the seeds do not answer.
OFFTOPIC_KINDS = ("unrelated", "near_domain")
KINDS = (*ON_TOPIC_KINDS, *OFFTOPIC_KINDS)
SPLITS = ("dev", "test")
FIELDS = ("id", "question", "kind", "relevant", "split")
OPTIONAL_FIELDS = ("facts", "collection")
# Where a question belongs (eval/collections.py). Without the field: its targets are in the seeds, or
# it is off-topic in both collections. "target": its relevant passages are in archive documents, so it
# is asked of the `scale` collection only. "answers": off-topic on the seeds, but an archive document
# answers it, so the `scale` collection leaves it out.
COLLECTION_MARKS = ("target", "answers")
# A snippet inside one sentence stays inside one passage and one embedded sentence unit.
SENTENCE_END = frozenset("。！？；!?;\n\r")
MULTI_MIN_SNIPPETS = 2
CROSS_MIN_DOCUMENTS = 2
LENGTH_LIMITS = {"short": (2, 6), "long": (60, 200)}  # characters of the question, inclusive


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
    facts: tuple[str, ...] = ()  # any one of them in an answer gives the key fact
    collection: str | None = None  # None, "target" or "answers" (COLLECTION_MARKS)

    def asked_of(self, collection: str) -> bool:
        """Whether the eval asks this question of the collection named `seeds` or `scale`."""
        return self.collection != ("target" if collection == "seeds" else "answers")


def is_string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def record_problems(where: str, row: object) -> list[str]:
    """What is wrong with one parsed line of the questions file (empty when nothing)."""
    if not isinstance(row, dict) or any(name not in row for name in FIELDS):
        return [f"{where}: needs the fields {', '.join(FIELDS)}"]
    problems = []
    if unknown := sorted(set(row) - {*FIELDS, *OPTIONAL_FIELDS}):
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
    relevant, facts, kind = row["relevant"], row.get("facts", []), row["kind"]
    if not isinstance(row["question"], str) or not row["question"].strip():
        return [*problems, f"{where}: empty question"]
    if kind not in KINDS:
        problems.append(f"{where}: kind {kind!r} is not one of {KINDS}")
    if row["split"] not in SPLITS:
        problems.append(f"{where}: split {row['split']!r} is not one of {SPLITS}")
    if not is_string_list(relevant):
        return [*problems, f"{where}: relevant must be a list of strings"]
    if not is_string_list(facts) or not all(fact.strip() for fact in facts):
        return [*problems, f"{where}: facts must be a list of non-empty strings"]
    if (kind in OFFTOPIC_KINDS) != (not relevant):
        problems.append(f"{where}: off-topic questions ({', '.join(OFFTOPIC_KINDS)}), and only they, have no snippets")
    if kind in OFFTOPIC_KINDS and facts:
        problems.append(f"{where}: off-topic questions have no facts")
    if row.get("collection") not in (None, *COLLECTION_MARKS):
        problems.append(f"{where}: collection must be one of {COLLECTION_MARKS}")
    if row.get("collection") == "target" and kind in OFFTOPIC_KINDS:
        problems.append(f"{where}: an off-topic question has no target documents")
    if row.get("collection") == "answers" and kind not in OFFTOPIC_KINDS:
        problems.append(f"{where}: only an off-topic question can be answered by the archive alone")
    if kind == "fact" and not facts:
        problems.append(f"{where}: a fact question needs facts")
    if kind in ("multi", "cross") and len(relevant) < MULTI_MIN_SNIPPETS:
        problems.append(f"{where}: a {kind} question needs at least {MULTI_MIN_SNIPPETS} snippets")
    if kind in LENGTH_LIMITS:
        shortest, longest = LENGTH_LIMITS[kind]
        if not shortest <= len(row["question"].strip()) <= longest:
            problems.append(f"{where}: a {kind} question has {shortest}–{longest} characters")
    if len(set(relevant)) != len(relevant) or len(set(facts)) != len(facts):
        problems.append(f"{where}: repeated snippet or fact")
    for snippet in relevant:
        if breaks := sorted(SENTENCE_END & set(snippet)):
            problems.append(f"{where}: 「{snippet}」 crosses a sentence end {breaks}")
    return problems


def load_questions(path: Path = QUESTIONS_FILE, split: str | None = None) -> list[Question]:
    """Questions of the file, optionally only one split; QuestionSetError when a line is malformed."""
    questions: list[Question] = []
    problems: list[str] = []
    seen: Counter[tuple[str, str]] = Counter()
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
            questions.append(
                Question(
                    row["id"],
                    row["question"],
                    row["kind"],
                    tuple(row["relevant"]),
                    row["split"],
                    tuple(row.get("facts", ())),
                    row.get("collection"),
                )
            )
    problems.extend(f"duplicate {field} {value!r}" for (field, value), count in seen.items() if count > 1)
    if problems:
        raise QuestionSetError(problems)
    return [q for q in questions if split in (None, "all", q.split)]


def relevant_passages(
    questions: Sequence[Question], passages: Sequence[Passage]
) -> tuple[dict[str, set[str]], list[str]]:
    """Passage ids each question names, and a problem line for every label that does not fit the passages.

    A snippet must occur in exactly one passage, each fact in one of the question's relevant passages,
    and the snippets of a cross question must name passages of at least two documents.
    """
    labels: dict[str, set[str]] = {}
    problems = []
    for question in questions:
        labels[question.id] = set()
        for snippet in question.relevant:
            owners = [p for p in passages if snippet in p.text]
            if len(owners) != 1:
                ids = [p.passage_id for p in owners[:3]]
                problems.append(f"{question.id}: 「{snippet}」 occurs in {len(owners)} passages {ids}")
            labels[question.id].update(p.passage_id for p in owners[:1])
        named = [p for p in passages if p.passage_id in labels[question.id]]
        problems.extend(
            f"{question.id}: fact 「{fact}」 is in none of its relevant passages"
            for fact in question.facts
            if not any(fact in p.text for p in named)
        )
        if question.kind == "cross" and len({p.doc_id for p in named}) < CROSS_MIN_DOCUMENTS:
            problems.append(f"{question.id}: a cross question needs passages of {CROSS_MIN_DOCUMENTS}+ documents")
    return labels, problems


def checked_labels(questions: Sequence[Question], passages: Sequence[Passage]) -> dict[str, set[str]]:
    """Relevant passage ids per question; QuestionSetError listing every label that does not fit."""
    labels, problems = relevant_passages(questions, passages)
    if problems:
        raise QuestionSetError(problems)
    return labels


def within(questions: Sequence[Question], passages: Sequence[Passage]) -> list[Question]:
    """The questions whose targets are indexed: a question about archive documents is left out when a
    slice of the archive smaller than the eval's (a CI run's) does not hold all its snippets."""
    texts = [p.text for p in passages]
    return [
        q
        for q in questions
        if q.collection != "target" or all(any(snippet in text for text in texts) for snippet in q.relevant)
    ]


def word_characters(text: str) -> str:
    """The letters, digits and CJK characters of a text, punctuation and spaces removed."""
    return "".join(char for char in text if char.isalnum())


def bigram_overlap(question: str, passage_texts: Sequence[str]) -> float:
    """Share of the question's distinct character bigrams that occur in the passages' text (0 without any)."""
    characters = word_characters(question)
    grams = {characters[i : i + 2] for i in range(len(characters) - 1)}
    if not grams:
        return 0.0
    texts = [word_characters(text) for text in passage_texts]
    return sum(any(gram in text for text in texts) for gram in grams) / len(grams)


def counts_table(questions: Sequence[Question], passages: Sequence[Passage]) -> str:
    """Questions per kind and split, mean bigram overlap per kind, and labelled passages per document."""
    counts = Counter((q.kind, q.split) for q in questions)
    labels, _ = relevant_passages(questions, passages)
    text_of = {p.passage_id: p.text for p in passages}
    overlap = {
        q.id: bigram_overlap(q.question, [text_of[pid] for pid in labels[q.id]]) for q in questions if labels[q.id]
    }
    lines = [f"{'kind':<12}{'dev':>6}{'test':>6}{'total':>7}{'overlap':>9}"]
    for kind in (*KINDS, "all"):
        dev = sum(n for (k, s), n in counts.items() if s == "dev" and kind in (k, "all"))
        test = sum(n for (k, s), n in counts.items() if s == "test" and kind in (k, "all"))
        shares = [overlap[q.id] for q in questions if q.id in overlap and kind in (q.kind, "all")]
        mean = f"{sum(shares) / len(shares):.3f}" if shares else "-"
        lines.append(f"{kind:<12}{dev:>6}{test:>6}{dev + test:>7}{mean:>9}")
    doc_of = {p.passage_id: p.doc_id for p in passages}
    per_document = Counter(doc_of[pid] for ids in labels.values() for pid in ids)
    documents = [doc for doc in dict.fromkeys(doc_of.values()) if per_document[doc]]
    lines.append("labelled passages per document: " + ", ".join(f"{d}={per_document[d]}" for d in documents))
    lines.append("overlap: mean share of a question's character bigrams found in its relevant passages")
    return "\n".join(lines)


def main() -> int:
    """Check the questions file against the passages of both collections (no encoding); exit 1 listing offenders."""
    from eval.collections import COLLECTIONS, collection
    from service.config import Settings
    from service.ingest import ingest_paths

    settings = Settings()
    try:
        questions = load_questions()
        for name in COLLECTIONS:
            chosen = collection(name, settings)
            passages = ingest_paths(list(chosen.files)).passages
            asked = [q for q in questions if q.asked_of(name)]
            checked_labels(asked, passages)
            print(f"{QUESTIONS_FILE.name} on {chosen.label}: {len(asked)} questions, {len(passages)} passages")
            print(counts_table(asked, passages))
    except QuestionSetError as error:
        print(error, file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
