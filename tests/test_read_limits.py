"""Limits on what one document may expand to: unpacked size, characters, passages, PDF pages."""

import time
from pathlib import Path

import pytest

from service.ingest import Limits, OverLimit, ingest_file
from service.ingest.read import read_blocks
from tests.make_documents import make_blank_pdf, make_docx, make_docx_bomb, make_shared_stream_pdf

SENTENCE = "各级党组织要认真落实“三会一课”制度，严肃党内政治生活。"


def test_docx_bomb_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    bomb = make_docx_bomb(tmp_path / "bomb.docx", xml_megabytes=200)
    assert bomb.stat().st_size < 2 * 2**20
    started = time.process_time()
    with pytest.raises(OverLimit, match=r"bomb\.docx.*200 MB.*32 MB.*DJQA_MAX_UNPACKED_BYTES"):
        read_blocks(bomb, limits=Limits(unpacked_bytes=32 * 2**20))
    assert time.process_time() - started < 1.0, "only the zip directory is read"


def test_docx_text_over_the_character_limit_is_refused_while_streaming(tmp_path: Path) -> None:
    bomb = make_docx_bomb(tmp_path / "long.docx", xml_megabytes=30)  # within the unpacked limit, 1.4M characters
    started = time.process_time()
    with pytest.raises(OverLimit, match=r"long\.docx.*1,000,000 字.*DJQA_MAX_DOCUMENT_CHARS"):
        read_blocks(bomb, limits=Limits(unpacked_bytes=32 * 2**20, characters=1_000_000))
    assert time.process_time() - started < 5.0, "counted by a streaming parse, not by python-docx's tree"


def test_docx_text_is_counted_once_paragraph_by_paragraph(tmp_path: Path) -> None:
    """Each paragraph and table cell with one for its end, counted while streaming; the blocks made of
    them (cells joined, blank lines around the table) are not counted again."""
    rows = [["组建先锋岗", "信息中心党支部"], ["开展义诊", "门诊党支部"]]
    plan = make_docx(tmp_path / "plan.docx", "工作计划", [("Normal", SENTENCE), rows])
    characters = sum(len(text) + 1 for text in ["工作计划", SENTENCE, *(cell for row in rows for cell in row)])
    blocks = read_blocks(plan, limits=Limits(characters=characters))
    assert [block.text for block in blocks if block.table_row] == ["组建先锋岗｜信息中心党支部", "开展义诊｜门诊党支部"]
    with pytest.raises(OverLimit, match=rf"{characters - 1:,} 字"):
        read_blocks(plan, limits=Limits(characters=characters - 1))


def test_docx_whose_main_part_has_another_name_is_still_counted_while_streaming(tmp_path: Path) -> None:
    """The package's relationships name the main part; python-docx follows them, and so does the count."""
    bomb = make_docx_bomb(tmp_path / "renamed.docx", xml_megabytes=30, main_part="word/main.xml")
    started = time.process_time()
    with pytest.raises(OverLimit, match=r"renamed\.docx.*1,000,000 字.*DJQA_MAX_DOCUMENT_CHARS"):
        read_blocks(bomb, limits=Limits(unpacked_bytes=32 * 2**20, characters=1_000_000))
    assert time.process_time() - started < 5.0, "counted by a streaming parse, not by python-docx's tree"


def test_docx_within_the_limits_is_read(tmp_path: Path) -> None:
    plan = make_docx(tmp_path / "plan.docx", "工作计划", [("Normal", SENTENCE)])
    blocks = read_blocks(plan, limits=Limits(unpacked_bytes=2**20, characters=100))
    assert [block.text for block in blocks if block.text] == ["工作计划", SENTENCE]


def test_text_over_the_character_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text(SENTENCE * 40, encoding="utf-8")
    with pytest.raises(OverLimit, match="1,000 字"):
        ingest_file(path, limits=Limits(characters=1_000))
    assert ingest_file(path, limits=Limits(characters=2_000))[1]


def test_document_cut_into_too_many_passages_is_refused(tmp_path: Path) -> None:
    """A small file of many short paragraphs (40 KB became 14,000 passages): each one would be embedded."""
    path = tmp_path / "many.txt"
    path.write_text("\n".join(f"第{n}条：{SENTENCE}" for n in range(60)), encoding="utf-8")
    with pytest.raises(OverLimit, match=r"many\.txt.*60 个段落.*50 个的上限.*DJQA_MAX_DOCUMENT_PASSAGES"):
        ingest_file(path, limits=Limits(passages=50))


def test_pdf_of_too_many_pages_is_refused_quickly(tmp_path: Path) -> None:
    pdf = make_blank_pdf(tmp_path / "blank.pdf", 32_768)
    started = time.process_time()
    with pytest.raises(OverLimit, match=r"blank\.pdf.*32,768 页.*2,000 页的上限.*DJQA_MAX_PDF_PAGES"):
        read_blocks(pdf, limits=Limits(pdf_pages=2_000))
    assert time.process_time() - started < 2.0, "the declared page count is read, not every page"


PDF_LIMITS = Limits(pdf_pages=2_000, pdf_page_bytes=2 * 2**20, pdf_content_bytes=32 * 2**20)


def test_pdf_whose_pages_share_a_huge_content_stream_is_refused_before_any_text_is_extracted(tmp_path: Path) -> None:
    """806 KB, 2,000 pages, one 5 MB stream of operators that draw nothing: 9-11 s of extraction a page."""
    pdf = make_shared_stream_pdf(tmp_path / "shared.pdf", 2_000, stream_megabytes=5)
    assert pdf.stat().st_size < 2**20
    started = time.process_time()
    with pytest.raises(OverLimit, match=r"shared\.pdf.*第 1 页.*5\.0 MB.*每页 2 MB.*DJQA_MAX_PDF_PAGE_BYTES"):
        read_blocks(pdf, limits=PDF_LIMITS)
    assert time.process_time() - started < 3.0, "the stream's size is checked, its operators are not parsed"


def test_pdf_stream_shared_by_many_pages_counts_for_every_page_that_draws_it(tmp_path: Path) -> None:
    pdf = make_shared_stream_pdf(tmp_path / "shared.pdf", 2_000, stream_megabytes=0.5)  # 1,000 MB drawn in all
    started = time.process_time()
    with pytest.raises(OverLimit, match=r"shared\.pdf.*前 65 页.*32\.5 MB.*32 MB.*DJQA_MAX_PDF_CONTENT_BYTES"):
        read_blocks(pdf, limits=PDF_LIMITS)
    assert time.process_time() - started < 3.0, "a shared stream is decoded once, however many pages draw it"


def test_pdf_within_the_content_limits_is_read(tmp_path: Path) -> None:
    pdf = make_shared_stream_pdf(
        tmp_path / "small.pdf", 1, 0, operators=b"BT /F1 12 Tf 72 700 Td (Party building) Tj ET\n"
    )
    blocks = read_blocks(pdf, limits=PDF_LIMITS)
    assert [block.text for block in blocks] == ["Party building"]
