"""Check the retrieval eval set against the seed documents.

Every snippet in ``eval/questions.jsonl`` must occur exactly once across all
seed files and must lie inside one sentence (no sentence-ending punctuation,
no line break). Also checks the record schema and prints counts per kind and
split. Exits 1 on any problem.

Usage::

    python eval/check_snippets.py [SEEDS_DIR] [--questions FILE]

SEEDS_DIR defaults to ``seeds/`` under the repo root, falling back to
``/work/shared/seeds``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_QUESTIONS = REPO_ROOT / "eval" / "questions.jsonl"
FALLBACK_SEEDS = Path("/work/shared/seeds")

KINDS = ("lexical", "paraphrase", "multi", "offtopic")
SPLITS = ("dev", "test")
REQUIRED_FIELDS = ("id", "question", "kind", "relevant", "split")
# full-width full stop, exclamation, question mark, semicolon; ASCII forms; breaks
SENTENCE_END = frozenset("\u3002\uff01\uff1f\uff1b!?;\n\r")
ID_PATTERN = re.compile(r"^q\d{3,}$")
SOFT_MIN_LEN = 8
SOFT_MAX_LEN = 25
MULTI_MIN = 2


def resolve_seeds_dir(arg: str | None) -> Path:
    """Return the seeds directory: the argument, repo ``seeds/`` or the fallback."""
    if arg:
        path = Path(arg)
        return path if path.is_absolute() else (Path.cwd() / path)
    local = REPO_ROOT / "seeds"
    if local.is_dir() and any(local.glob("*.txt")):
        return local
    return FALLBACK_SEEDS


def load_seeds(seeds_dir: Path) -> dict[str, str]:
    """Map doc id (file stem) to its text."""
    return {
        p.stem: p.read_text(encoding="utf-8") for p in sorted(seeds_dir.glob("*.txt"))
    }


def count_occurrences(haystack: str, needle: str) -> int:
    """Count possibly overlapping occurrences of ``needle`` in ``haystack``."""
    count = 0
    start = haystack.find(needle)
    while start != -1:
        count += 1
        start = haystack.find(needle, start + 1)
    return count


def check_fields(where: str, rec: dict[str, object], seen: set[str]) -> list[str]:
    """Check id, question, kind and split of one record."""
    problems: list[str] = []
    qid, question = rec["id"], rec["question"]
    if not isinstance(qid, str) or not ID_PATTERN.match(qid):
        problems.append(f"{where}: bad id {qid!r}")
    elif f"id:{qid}" in seen:
        problems.append(f"{where}: duplicate id")
    seen.add(f"id:{qid}")
    if not isinstance(question, str) or not question.strip():
        problems.append(f"{where}: empty question")
    elif f"q:{question}" in seen:
        problems.append(f"{where}: duplicate question {question!r}")
    seen.add(f"q:{question}")
    if rec["kind"] not in KINDS:
        problems.append(f"{where}: bad kind {rec['kind']!r}")
    if rec["split"] not in SPLITS:
        problems.append(f"{where}: bad split {rec['split']!r}")
    return problems


def check_relevant(where: str, kind: object, relevant: list[str]) -> list[str]:
    """Check the shape of the relevant list against the question kind."""
    problems: list[str] = []
    if kind == "offtopic" and relevant:
        problems.append(f"{where}: offtopic question has relevant snippets")
    if kind != "offtopic" and not relevant:
        problems.append(f"{where}: no relevant snippets")
    if kind == "multi" and len(relevant) < MULTI_MIN:
        problems.append(f"{where}: multi question needs at least {MULTI_MIN} snippets")
    if len(set(relevant)) != len(relevant):
        problems.append(f"{where}: repeated snippet")
    return problems


def check_snippet(
    where: str, snippet: str, seeds: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Return (problems, warnings) for one snippet."""
    problems: list[str] = []
    warnings: list[str] = []
    bad = sorted({ch for ch in snippet if ch in SENTENCE_END})
    if bad:
        problems.append(f"{where}: snippet {snippet!r} contains {bad!r}")
    hits = {
        doc: n for doc, text in seeds.items() if (n := count_occurrences(text, snippet))
    }
    total = sum(hits.values())
    if total != 1:
        problems.append(f"{where}: snippet {snippet!r} occurs {total} times {hits}")
    if not SOFT_MIN_LEN <= len(snippet) <= SOFT_MAX_LEN:
        warnings.append(f"{where}: snippet {snippet!r} has {len(snippet)} chars")
    return problems, warnings


def check_record(
    lineno: int, rec: object, seeds: dict[str, str], seen: set[str]
) -> tuple[list[str], list[str]]:
    """Return (problems, warnings) for one parsed record."""
    where = f"line {lineno}"
    if not isinstance(rec, dict):
        return [f"{where}: not a JSON object"], []
    missing = [f for f in REQUIRED_FIELDS if f not in rec]
    if missing:
        return [f"{where}: missing fields {missing}"], []
    where = f"line {lineno} ({rec['id']})"
    problems = check_fields(where, rec, seen)
    relevant = rec["relevant"]
    if not isinstance(relevant, list) or not all(isinstance(s, str) for s in relevant):
        return [*problems, f"{where}: relevant must be a list of strings"], []
    problems.extend(check_relevant(where, rec["kind"], relevant))
    warnings: list[str] = []
    for snippet in relevant:
        snippet_problems, snippet_warnings = check_snippet(where, snippet, seeds)
        problems.extend(snippet_problems)
        warnings.extend(snippet_warnings)
    return problems, warnings


def print_counts(counts: Counter[tuple[str, str]], docs_hit: Counter[str]) -> None:
    """Print the per kind / split table and the snippets per document."""
    print(f"{'kind':<12}{'dev':>6}{'test':>6}{'total':>7}")
    for kind in KINDS:
        dev, test = counts[(kind, "dev")], counts[(kind, "test")]
        print(f"{kind:<12}{dev:>6}{test:>6}{dev + test:>7}")
    dev_total = sum(n for (_, split), n in counts.items() if split == "dev")
    test_total = sum(n for (_, split), n in counts.items() if split == "test")
    print(f"{'all':<12}{dev_total:>6}{test_total:>6}{dev_total + test_total:>7}")
    print("snippets per doc: " + ", ".join(f"{d}={n}" for d, n in docs_hit.items()))


def main(argv: list[str] | None = None) -> int:
    """Run the checks; return 0 when the eval set is clean, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "seeds", nargs="?", help="seed directory (default: repo seeds/)"
    )
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    args = parser.parse_args(argv)

    seeds_dir = resolve_seeds_dir(args.seeds)
    seeds = load_seeds(seeds_dir)
    if not seeds:
        print(f"no seed files in {seeds_dir}", file=sys.stderr)
        return 1

    problems: list[str] = []
    warnings: list[str] = []
    seen: set[str] = set()
    counts: Counter[tuple[str, str]] = Counter()
    docs_hit: Counter[str] = Counter(dict.fromkeys(seeds, 0))

    lines = args.questions.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if "\\u" in line:
            problems.append(f"line {lineno}: escaped unicode (use ensure_ascii=False)")
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {lineno}: invalid JSON ({exc})")
            continue
        rec_problems, rec_warnings = check_record(lineno, rec, seeds, seen)
        problems.extend(rec_problems)
        warnings.extend(rec_warnings)
        if not isinstance(rec, dict):
            continue
        counts[(str(rec.get("kind")), str(rec.get("split")))] += 1
        relevant = rec.get("relevant")
        for snippet in relevant if isinstance(relevant, list) else []:
            for doc, text in seeds.items():
                if isinstance(snippet, str) and snippet in text:
                    docs_hit[doc] += 1

    print(f"seeds: {seeds_dir} ({len(seeds)} files)")
    print(f"questions: {args.questions} ({sum(counts.values())} records)")
    print_counts(counts, docs_hit)
    problems.extend(
        f"seed {doc} has no relevant snippet" for doc, n in docs_hit.items() if not n
    )

    for warning in warnings:
        print(f"WARNING {warning}")
    for problem in problems:
        print(f"PROBLEM {problem}")
    if problems:
        print(f"{len(problems)} problem(s)")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
