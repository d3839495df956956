from pathlib import Path

import pytest

from service.ingest import ingest_paths
from service.ingest.read import ReadError, read_blocks

TEXT = "一、加强党的建设\n各级党组织要认真落实“三会一课”制度，严肃党内政治生活。\n"


def test_gb18030_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "gbk.txt"
    path.write_bytes(TEXT.encode("gb18030"))
    assert [b.text for b in read_blocks(path)][:2] == TEXT.splitlines()


def test_utf8_with_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(TEXT.encode("utf-8-sig"))
    assert read_blocks(path)[0].text == "一、加强党的建设"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_utf16_with_its_bom_is_read(tmp_path: Path, encoding: str) -> None:
    # Windows Notepad's 「Unicode」 is UTF-16 LE with a BOM.
    path = tmp_path / "notepad.txt"
    raw = TEXT.encode("utf-16-be") if encoding == "utf-16-be" else TEXT.encode("utf-16")
    path.write_bytes(b"\xfe\xff" + raw if encoding == "utf-16-be" else raw)
    assert [b.text for b in read_blocks(path)][:2] == TEXT.splitlines()


def test_undecodable_file_is_reported_by_name_and_skipped(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text(TEXT, encoding="utf-8")
    bad.write_bytes(b"\x81\x30\xff\xfe\x00" * 40 + b"\x81")
    corpus = ingest_paths([bad, good])
    assert [d.doc_id for d in corpus.documents] == ["good"]
    assert len(corpus.problems) == 1 and "bad.txt" in corpus.problems[0]


def test_file_without_text_is_a_read_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n \n", encoding="utf-8")
    corpus = ingest_paths([path])
    assert corpus.documents == [] and "empty.txt" in corpus.problems[0]


def test_unsupported_type_is_a_read_error(tmp_path: Path) -> None:
    path = tmp_path / "slides.pptx"
    path.write_bytes(b"PK")
    with pytest.raises(ReadError, match=r"slides\.pptx"):
        read_blocks(path)


def test_markdown_headings_carry_levels(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("# 总体要求\n正文内容。\n## 具体措施\n", encoding="utf-8")
    blocks = read_blocks(path)
    assert (blocks[0].text, blocks[0].heading_level) == ("总体要求", 1)
    assert (blocks[2].text, blocks[2].heading_level) == ("具体措施", 2)
