"""What linking questions to passages buys: other wordings of linked needs, before and after.

Half of the spoken-style (colloquial) dev questions of eval/questions.jsonl — every other one in id
order — are linked to their target passages, as an administrator would from 问题反馈, in a private
copy of the seed index. eval/linked_wordings.jsonl holds other wordings of exactly those needs,
written by hand before the system was run on them; they are scored before and after the links
(hybrid hit@5, MRR@10), and so are all other on-topic questions of the eval set, which must not move.

    python -m eval.linked      # writes eval/results/linked.{json,md}
"""

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from eval.collections import collection
from eval.metrics import mean_metrics, ranking_metrics
from eval.questions import ON_TOPIC_KINDS, Question, checked_labels, load_questions
from service.config import PROJECT_ROOT, Settings
from service.engine import build_index, open_encoders, open_searcher, open_tokenizer, source_files
from service.linking import link_question
from service.search import Searcher

WORDINGS_FILE = Path(__file__).resolve().parent / "linked_wordings.jsonl"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEPTH = 10


def linked_half(questions: Sequence[Question]) -> list[Question]:
    """Every other spoken-style dev question in id order (the first, the third …)."""
    spoken = sorted((q for q in questions if q.kind == "colloquial" and q.split == "dev"), key=lambda q: q.id)
    return spoken[::2]


def scores(searcher: Searcher, questions: Sequence[Question], labels: dict[str, set[str]]) -> dict[str, float]:
    """Mean hit@5 and MRR@10 of hybrid search over the questions."""
    rows = []
    for question in questions:
        ranking = [hit.passage.passage_id for hit in searcher.search(question.question, top_k=DEPTH)]
        rows.append(ranking_metrics(ranking, labels[question.id]))
    means = mean_metrics(rows)
    return {"hit@5": round(means["hit@5"], 3), "mrr@10": round(means["mrr@10"], 3), "questions": len(rows)}


def measure(settings: Settings, name: str = "seeds") -> dict:
    """Scores before and after linking, in a private index of the eval's collection `name` (the seeds,
    or the seeds beside the archive slice, eval/collections.py) built under `settings`' cache."""
    encoders, tokenizer = open_encoders(settings, build=True), open_tokenizer(settings)
    files = source_files(settings.seeds_dir) if name == "seeds" else list(collection(name, settings).files)
    build_index(files, settings, encoders, tokenizer)
    questions = [q for q in load_questions() if q.asked_of(name)]
    wordings = load_questions(WORDINGS_FILE)
    linked = linked_half(questions)
    linked_ids = {q.id for q in linked}
    others = [q for q in questions if q.kind in ON_TOPIC_KINDS and q.id not in linked_ids]
    searcher = open_searcher(settings, encoders, tokenizer)
    passages = list(searcher.store.all_passages())
    labels = checked_labels([*questions, *wordings], passages)
    sets = {"other wordings of linked needs": wordings, "linked questions themselves": linked}
    sets["all other on-topic questions"] = others
    sets["other spoken-style questions"] = [q for q in others if q.kind == "colloquial"]
    before = {name: scores(searcher, chosen, labels) for name, chosen in sets.items()}
    for question in linked:
        (passage_id,) = labels[question.id]
        link_question(settings, encoders, tokenizer, passage_id, question.question)
    searcher = open_searcher(settings, encoders, tokenizer)
    after = {name: scores(searcher, chosen, labels) for name, chosen in sets.items()}
    return {"linked": [q.id for q in linked], "passages": len(passages), "before": before, "after": after}


def markdown(results: dict) -> str:
    lines = ["# Linked questions: before and after (hybrid)"]
    for name, measured in results.items():
        lines += [
            "",
            f"## {name} ({measured['passages']} passages)",
            "",
            f"Linked: {', '.join(measured['linked'])} (every other spoken-style dev question), each to its target.",
            "",
            "| questions | n | hit@5 before | hit@5 after | MRR@10 before | MRR@10 after |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for group, before in measured["before"].items():
            after = measured["after"][group]
            lines.append(
                f"| {group} | {before['questions']} | {before['hit@5']:.3f} | {after['hit@5']:.3f} "
                f"| {before['mrr@10']:.3f} | {after['mrr@10']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    results = {}
    for name in ("seeds", "scale"):
        with tempfile.TemporaryDirectory(prefix="djqa-linked-") as scratch:
            folder = Path(scratch)
            settings = Settings(
                index_dir=folder / "index", uploads_dir=folder / "uploads", cache_dir=PROJECT_ROOT / "data" / "cache"
            )
            results[name] = measure(settings, name)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "linked.json").write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
    report = markdown(results)
    (RESULTS_DIR / "linked.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
