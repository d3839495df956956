"""Document type and year on documents nobody tuned for: a hand check of 36 archive documents
(eval/metadata_check.tsv), and the rules on small made-up texts. No model, no index."""

import csv
from pathlib import Path

import pytest

from service.config import PROJECT_ROOT, Settings
from service.ingest import ingest_file
from service.ingest.structure import detect_doc_type, detect_year

CHECK_FILE = PROJECT_ROOT / "eval" / "metadata_check.tsv"


def hand_checked() -> list[dict]:
    with CHECK_FILE.open(encoding="utf-8") as rows:
        return list(csv.DictReader(rows, delimiter="\t"))


def unknown_or(value: str) -> object:
    return None if value == "-" else value


@pytest.fixture(scope="module")
def archive() -> Path:
    folder = Settings().eval_collection_dir / "docs"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not on this machine")
    return folder


def test_the_hand_check_covers_thirty_documents_or_more() -> None:
    assert len(hand_checked()) >= 30


def test_type_and_year_are_right_or_unknown_never_wrong(archive: Path) -> None:
    wrong = []
    for row in hand_checked():
        document, _ = ingest_file(archive / f"{row['doc_id']}.txt")
        expected_year = None if row["year"] == "-" else int(row["year"])
        if document.doc_type not in (None, unknown_or(row["doc_type"])):
            wrong.append(f"{row['doc_id']}: type {document.doc_type}, by hand {row['doc_type']}")
        if document.year not in (None, expected_year):
            wrong.append(f"{row['doc_id']}: year {document.year}, by hand {row['year']}")
    assert wrong == []


def test_a_year_or_type_filter_keeps_the_hand_checked_documents(archive: Path) -> None:
    """Filtering by the right type or year finds the document: what is known is known."""
    found = {"type": 0, "year": 0}
    rows = hand_checked()
    for row in rows:
        document, _ = ingest_file(archive / f"{row['doc_id']}.txt")
        found["type"] += document.doc_type == unknown_or(row["doc_type"])
        found["year"] += document.year == (None if row["year"] == "-" else int(row["year"]))
    assert found == {"type": len(rows), "year": len(rows)}


def test_a_regulation_with_a_problems_chapter_is_no_work_summary() -> None:
    texts = ["第一章 总则", "第一条 为了规范管理，制定本办法。", "第二条 本办法适用于全省。"]
    texts.append("第三条 存在问题的，责令改正。")
    assert detect_doc_type("某某注册管理办法", texts, ["存在问题的处理", "下一步"]) == "法规"


def test_a_work_summary_is_still_recognised() -> None:
    assert detect_doc_type("2023年党建工作总结", ["今年以来，我们……"], ["存在的问题", "下一步打算"]) == "工作总结"


def test_a_statute_is_dated_by_its_latest_revision_not_its_first_edition() -> None:
    header = [
        "2001年10月27日 第九届全国人民代表大会常务委员会第二十四次会议通过",
        "2018年12月29日 第十三届全国人民代表大会常务委员会第七次会议修正",
        "第一章 总则",
        "第一条 为了预防、控制和消除职业病危害，制定本法。",
    ]
    assert detect_year("某某防治法", header, statute=True) == 2018


def test_a_date_it_took_effect_does_not_date_a_statute() -> None:
    header = ["2014年10月27日 市人民代表大会常务委员会公布", "2015年1月1日 施行", "第一条 为了……制定本条例。"]
    assert detect_year("某市急救条例", header, statute=True) == 2014


def test_a_statute_without_a_dated_header_has_no_year() -> None:
    texts = ["第一章 总则", "第一条 根据2001年的决定，制定本条例。", "第二条 本条例自1997年3月1日起施行。"]
    assert detect_year("某市母婴保健条例", texts, statute=True) is None
