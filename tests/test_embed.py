from service.embed import MIN_CLAUSE_UNIT, clause_texts, unit_texts
from service.records import Passage

TEXT = "坚持党建引领，建立党员联系职工“网格化”管理体系，实现全覆盖。要抓好落实。"


def passage(text: str) -> Passage:
    return Passage("doc:1", "doc", "标题", ("一、总体要求",), 1, 0, len(text), text)


def test_clauses_are_cut_at_clause_marks_without_them_and_short_ones_dropped() -> None:
    assert clause_texts("坚持党建引领，建立党员联系职工“网格化”管理体系，实现全覆盖。") == [
        "建立党员联系职工“网格化”管理体系"
    ]
    assert all(len(clause) >= MIN_CLAUSE_UNIT for clause in clause_texts(TEXT))


def test_a_sentence_of_one_clause_is_not_repeated_as_a_clause() -> None:
    assert clause_texts("各级党组织要切实加强对卫生健康工作的全面领导。") == []


def test_clause_units_follow_the_whole_and_its_sentences() -> None:
    plain = unit_texts(passage(TEXT), with_context=False)
    assert plain == [TEXT, "坚持党建引领，建立党员联系职工“网格化”管理体系，实现全覆盖。", "要抓好落实。"]
    with_clauses = unit_texts(passage(TEXT), with_context=False, with_clauses=True)
    assert with_clauses == [*plain, "建立党员联系职工“网格化”管理体系"]


def test_units_are_never_repeated() -> None:
    text = "加强医德医风建设，持续纠治四风问题。加强医德医风建设，持续纠治四风问题。"
    units = unit_texts(passage(text), with_context=False, with_clauses=True)
    assert len(units) == len(set(units))
