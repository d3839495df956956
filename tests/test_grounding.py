"""The grounding check: sentences, citation marks and support, with the real models on seed passages."""

import pytest

from service.embed import Encoders
from service.grounding import GroundingChecker, lexical_share, split_cited
from service.records import Passage
from service.search import Searcher
from service.text import sentence_spans

INVENTED = "卫健系统党委决定每年向每名党员发放一千元学习补贴，并在全省推广。"


def statements(passage: Passage) -> list[str]:
    pieces = [passage.text[s:e].strip() for s, e in sentence_spans(passage.text)]
    return [piece for piece in pieces if len(piece) >= 15]


@pytest.fixture(scope="module")
def checker(encoders: Encoders) -> GroundingChecker:
    return GroundingChecker(encoders)


@pytest.fixture(scope="module")
def two_passages(searcher: Searcher) -> list[Passage]:
    """Two passages of different documents, each with at least one statement."""
    passages = [p for p in searcher.store.index.passages if statements(p)]
    other = next(p for p in passages if p.doc_id != passages[0].doc_id)
    return [passages[0], other]


def test_marks_after_the_full_stop_belong_to_the_sentence_before() -> None:
    assert split_cited("甲是乙。【1】丙是丁【2】。戊【1，3】") == [("甲是乙。", [1]), ("丙是丁。", [2]), ("戊", [1, 3])]


def test_ascii_brackets_count_as_citations() -> None:
    assert split_cited("党建引领发展[2]。") == [("党建引领发展。", [2])]


def test_lexical_share_is_the_share_of_bigrams_found() -> None:
    assert lexical_share("党建引领", "坚持党建引领业务") == 1.0
    assert lexical_share("红烧肉", "坚持党建引领业务") == 0.0


def test_copied_sentence_is_kept_with_its_citation(checker: GroundingChecker, two_passages: list[Passage]) -> None:
    sentence = statements(two_passages[0])[0]
    checked = checker.check(f"{sentence}【1】", two_passages)
    assert checked.kept == 1 and checked.removed == 0 and checked.text.endswith("【1】")


def test_invented_sentence_is_removed(checker: GroundingChecker, two_passages: list[Passage]) -> None:
    sentence = statements(two_passages[0])[0]
    checked = checker.check(f"{sentence}【1】{INVENTED}【1】", two_passages)
    assert checked.kept == 1 and checked.removed == 1 and INVENTED not in checked.text
    assert checked.sentences[1].reason == "unsupported"


def test_sentence_without_a_valid_citation_is_removed(checker: GroundingChecker, two_passages: list[Passage]) -> None:
    first, second = statements(two_passages[0])[0], statements(two_passages[1])[0]
    checked = checker.check(f"{first}【1】{second}【7】{second}", two_passages)
    assert checked.kept == 1 and checked.removed == 2
    assert {s.reason for s in checked.sentences if not s.kept} == {"no_citation"}


def test_correct_sentence_citing_the_wrong_passage_is_removed(
    checker: GroundingChecker, two_passages: list[Passage]
) -> None:
    sentence = statements(two_passages[1])[0]
    assert not checker.check(f"{sentence}【1】", two_passages).kept
    assert checker.check(f"{sentence}【2】", two_passages).kept == 1


def test_a_wrong_extra_citation_is_dropped_from_a_kept_sentence(
    checker: GroundingChecker, two_passages: list[Passage]
) -> None:
    sentence = statements(two_passages[1])[0]
    checked = checker.check(f"{sentence}【1】【2】", two_passages)
    assert checked.kept == 1 and checked.sentences[0].citations == (2,)
