"""Generated answers with whatever model is configured: `python -m eval.answers [--split test] [--limit N]`.

Set DJQA_LLM_BASE_URL (and DJQA_LLM_MODEL …) as for serving. Per question it runs /api/ask's core
in-process, streamed, and reports: on-topic answered, off-topic refused, key facts present, what
produced the answers (generated and checked, or which fallback), citation precision (share of the
kept sentences whose cited passage is one of the question's relevant passages), sentences removed by
the grounding check, and latency to the first token and to the checked answer. Writes
eval/results/answers.json.
"""

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from eval.questions import KINDS, OFFTOPIC_KINDS, ON_TOPIC_KINDS, SPLITS, checked_labels, load_questions
from eval.run import ask_outcome
from service.answer import Answerer
from service.config import Settings
from service.engine import open_searcher
from service.generate import GENERATE, Generator, ModelClient
from service.grounding import GroundingChecker

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "answers.json"


def share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 3) if flags else None


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)


def run(settings: Settings, split: str, limit: int | None, mode: str | None, kinds: list[str] | None = None) -> dict:
    searcher = open_searcher(settings)
    client = ModelClient.from_settings(settings)
    generator = Generator(
        Answerer(searcher, settings.answer_min_confidence), client, GroundingChecker(searcher.encoders)
    )
    questions = load_questions(split=None if split == "all" else split)
    questions = [question for question in questions if not kinds or question.kind in kinds][:limit]
    labels = checked_labels(questions, list(searcher.store.all_passages()))
    rows = []
    for question in questions:
        started = time.perf_counter()
        first_token = None
        result = None
        pieces = []
        for event in generator.events(question.question, mode=mode):
            if event.kind == "delta" and first_token is None:
                first_token = time.perf_counter() - started
            if event.kind == "delta":
                pieces.append(event.text)
            if event.kind == "final":
                result = event.result
        assert result is not None
        total = time.perf_counter() - started
        citations = [{"passage_id": hit.passage.passage_id} for hit in result.answer.citations]
        response = {"found": result.answer.found, "answer": result.answer.text, "citations": citations}
        rows.append(
            {
                "id": question.id,
                "kind": question.kind,
                "on_topic": question.kind in ON_TOPIC_KINDS,
                "has_facts": bool(question.facts),
                **ask_outcome(response, question, labels),
                "mode_used": result.mode_used,
                "fallback": result.fallback_code,
                "removed": result.removed_sentences,
                "first_token_s": first_token,
                "total_s": total,
                "answer": result.answer.text,
                "streamed": "".join(pieces),  # what the model wrote, before the check
            }
        )
    return {"model": settings.llm_model if client else None, "split": split, **summary(rows), "rows": rows}


def summary(rows: list[dict]) -> dict:
    on_topic = [row for row in rows if row["on_topic"]]
    off_topic = [row for row in rows if row["kind"] in OFFTOPIC_KINDS]
    generated = [row for row in rows if row["mode_used"] == GENERATE]
    kept = sum(row["sentences"] for row in generated)
    removed = sum(row["removed"] for row in rows)
    not_called = (None, "llm_not_configured")
    called = [row for row in rows if row["mode_used"] == GENERATE or row["fallback"] not in not_called]
    first_tokens = [row["first_token_s"] for row in called if row["first_token_s"] is not None]
    totals = [row["total_s"] for row in called]
    return {
        "questions": len(rows),
        "n_on_topic": len(on_topic),
        "n_off_topic": len(off_topic),
        "n_with_facts": sum(row["has_facts"] for row in on_topic),
        "answered_on_topic": share([row["found"] for row in on_topic]),
        "refused_off_topic": share([not row["found"] for row in off_topic]),
        "fact_present": share([row["fact"] for row in on_topic if row["has_facts"]]),
        "answers_by_source": dict(Counter(row["fallback"] or row["mode_used"] for row in rows if row["found"])),
        "generated_sentences_kept": kept,
        "sentences_removed": removed,
        "citation_precision_kept": sum(row["precise"] for row in generated) / kept if kept else None,
        "model_called": len(called),
        "first_token_s": {"median": percentile(first_tokens, 0.5), "p95": percentile(first_tokens, 0.95)},
        "full_answer_s": {"median": percentile(totals, 0.5), "p95": percentile(totals, 0.95)},
        "mean_answer_s": round(statistics.mean(totals), 3) if totals else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.answers", description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=[*SPLITS, "all"], default="test")
    parser.add_argument("--limit", type=int, help="只评测前 N 个问题")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, help="只评测这些类别的问题")
    parser.add_argument("--mode", choices=["generate", "extract"], help="默认：已配置模型时生成")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    results = run(Settings(), args.split, args.limit, args.mode, args.kinds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
    json.dump({k: v for k, v in results.items() if k != "rows"}, sys.stdout, ensure_ascii=False, indent=2)
    print(f"\n→ {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
