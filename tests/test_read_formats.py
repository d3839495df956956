"""Word and PDF files: structure from styles, tables in order, PDF pages without their furniture."""

from pathlib import Path

import pytest

from service.ingest import ingest_file
from service.ingest.read import ReadError, pdf_pages, read_blocks
from tests.make_documents import cjk_collection, make_docx, make_pdf, truetype_subset

TITLE = "在全市卫生健康系统党建工作会议上的讲话"
INTEGRATION = (
    "各级党组织要认真落实“三会一课”制度，严肃党内政治生活，推动党建与医疗业务深度融合，切实把党的领导"
    "贯穿医院管理全过程各方面，不断提升公立医院高质量发展水平，让人民群众有更多获得感。"
)
INTEGRITY = (
    "要持续纠治医药购销领域和医疗服务中的不正之风，坚决查处收受红包回扣等违纪违法行为，教育引导广大医务"
    "人员恪守医德医风，营造风清气正的行业环境，以清廉医院建设的实际成效取信于民。各医疗机构要把清廉医院建设"
    "纳入年度目标考核，与评先评优、职称晋升挂钩，形成一级抓一级、层层抓落实的工作格局，确保各项要求落地见效。"
)
TRAINING = "要加强党务干部队伍建设，每年至少组织一次党支部书记集中轮训，提升抓党建促业务的能力。"
# Body paragraphs start with two full-width spaces, as Chinese documents are typed.
PARAGRAPHS = [
    TITLE,
    "一、加强党的政治建设",
    "　　" + INTEGRATION,
    "二、推进清廉医院建设",
    "　　" + INTEGRITY * 5,
    "　　" + TRAINING,
]
HEADER, FOOTER = "某市卫生健康委员会党委文件", "内部资料 注意保存"


@pytest.fixture(scope="session")
def cjk_font(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if cjk_collection() is None:
        pytest.skip("no CJK font for making PDFs: apt-get install fonts-noto-cjk (make test does)")
    text = "".join(PARAGRAPHS) + HEADER + FOOTER + "第页共"
    return truetype_subset(text, tmp_path_factory.mktemp("font") / "cjk.ttf")


def speech_pdf(folder: Path, font: Path, page_number: str, indent: bool = True) -> Path:
    paragraphs = PARAGRAPHS if indent else [paragraph.lstrip("　") for paragraph in PARAGRAPHS]
    return make_pdf(folder / "speech.pdf", paragraphs, font, HEADER, FOOTER, page_number, new_page_before=(3,))


@pytest.mark.parametrize(
    "page_number", ["- {page} -", "第 {page} 页", "{page}", "{page}/{pages}", "第 {page} 页 共 {pages} 页"]
)
def test_pdf_passages_keep_pages_without_headers_footers_or_page_numbers(
    tmp_path: Path, cjk_font: Path, page_number: str
) -> None:
    document, passages = ingest_file(speech_pdf(tmp_path, cjk_font, page_number))
    assert document.title == TITLE
    for furniture in (HEADER, FOOTER, "内部资料"):
        assert furniture not in document.text
    assert not any(line.strip("- 0123456789/第页共") == "" for line in document.text.splitlines())
    assert passages[0].page == 1 and passages[0].section_path == ("一、加强党的政治建设",)
    assert {passage.page for passage in passages if passage.section_path[0] == "二、推进清廉医院建设"} >= {2}
    assert all(passage.page is not None for passage in passages)


def test_pdf_lines_broken_by_the_layout_are_joined_across_lines_and_pages(tmp_path: Path, cjk_font: Path) -> None:
    document, passages = ingest_file(speech_pdf(tmp_path, cjk_font, "- {page} -"))
    assert INTEGRATION in document.text.splitlines()
    assert INTEGRITY * 5 in document.text.splitlines()
    assert TRAINING in [passage.text for passage in passages]
    third_page = pdf_pages(tmp_path / "speech.pdf", "speech.pdf")[2]
    assert third_page[0].text == HEADER and third_page[1].text in INTEGRITY
    assert not INTEGRITY.startswith(third_page[1].text)


def test_unindented_pdf_joins_lines_that_do_not_close_a_sentence(tmp_path: Path, cjk_font: Path) -> None:
    document, _ = ingest_file(speech_pdf(tmp_path, cjk_font, "- {page} -", indent=False))
    assert INTEGRATION in document.text.splitlines()
    assert TRAINING in document.text.splitlines()


def test_short_pdf_lines_stay_separate_paragraphs(tmp_path: Path, cjk_font: Path) -> None:
    blocks = read_blocks(speech_pdf(tmp_path, cjk_font, "- {page} -"))
    assert [block.text for block in blocks[:3]] == [TITLE, "一、加强党的政治建设", INTEGRATION]


def test_pdf_without_text_layer_asks_for_ocr(tmp_path: Path) -> None:
    from fpdf import FPDF

    scan = FPDF()
    scan.add_page()
    scan.rect(20, 20, 170, 250, style="F")  # stands in for the page image of a scan
    scan.output(str(tmp_path / "scan.pdf"))
    with pytest.raises(ReadError, match=r"scan\.pdf：PDF 中没有可提取的文字（可能是扫描件），需要先做 OCR"):
        read_blocks(tmp_path / "scan.pdf")


def test_encrypted_pdf_is_a_read_error_naming_the_reason(tmp_path: Path, cjk_font: Path) -> None:
    import pypdf

    writer = pypdf.PdfWriter(clone_from=speech_pdf(tmp_path, cjk_font, "- {page} -"))
    writer.encrypt("secret", algorithm="RC4-128")
    writer.write(tmp_path / "locked.pdf")
    with pytest.raises(ReadError, match=r"locked\.pdf：PDF 已加密"):
        read_blocks(tmp_path / "locked.pdf")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog", r"broken\.pdf：PDF 文件已损坏"),
        ("broken.docx", b"PK\x03\x04 not really a zip", r"broken\.docx：文件已损坏或不是有效的 Word 文档"),
        ("plain.docx", "只是改了扩展名的文本".encode(), r"plain\.docx：文件已损坏或不是有效的 Word 文档"),
        ("old.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), r"old\.docx：.*旧版 Word"),
    ],
)
def test_corrupt_files_are_read_errors_naming_the_file(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ReadError, match=message):
        read_blocks(tmp_path / name)


def plan_docx(path: Path, heading_styles: tuple[str, str] = ("Heading 1", "Heading 2")) -> Path:
    level_1, level_2 = heading_styles
    return make_docx(
        path,
        "关于加强公立医院党的建设的实施方案",
        [
            (level_1, "总体要求"),
            ("Normal", "以新时代党的建设总要求为指导，全面加强公立医院党的建设，推动党建与业务深度融合。"),
            (level_2, "工作目标"),
            ("Normal", "到年底，党支部标准化规范化建设达标率达到百分之百，党员先锋岗覆盖全部临床科室。"),
            [["重点任务", "责任科室", "完成时限"], ["开展党支部书记轮训", "组织人事科", "六月底"]],
            (level_1, "保障措施"),
            ("Normal", "各科室要高度重视，主要负责同志亲自抓，确保各项任务落到实处。"),
        ],
    )


def test_docx_sections_come_from_heading_styles(tmp_path: Path) -> None:
    document, passages = ingest_file(plan_docx(tmp_path / "plan.docx"))
    assert document.title == "关于加强公立医院党的建设的实施方案"
    sections = {passage.text[:6]: passage.section_path for passage in passages}
    assert sections["以新时代党的"] == ("总体要求",)
    assert sections["到年底，党支"] == ("总体要求", "工作目标")
    assert sections["各科室要高度"] == ("保障措施",)


def test_docx_table_rows_are_passages_in_document_order(tmp_path: Path) -> None:
    _, passages = ingest_file(plan_docx(tmp_path / "plan.docx"))
    texts = [passage.text for passage in passages]
    assert texts.index("开展党支部书记轮训｜组织人事科｜六月底") == texts.index("重点任务｜责任科室｜完成时限") + 1
    assert texts.index("重点任务｜责任科室｜完成时限") > texts.index(next(t for t in texts if t.startswith("到年底")))
    assert texts.index("开展党支部书记轮训｜组织人事科｜六月底") < texts.index(texts[-1])
    assert passages[texts.index("开展党支部书记轮训｜组织人事科｜六月底")].section_path == ("总体要求", "工作目标")


def test_docx_chinese_heading_style_names_are_recognised(tmp_path: Path) -> None:
    blocks = read_blocks(plan_docx(tmp_path / "wps.docx", ("标题 1", "标题 2")))  # as WPS names them
    assert [(b.text, b.heading_level) for b in blocks if b.heading_level] == [
        ("总体要求", 1),
        ("工作目标", 2),
        ("保障措施", 1),
    ]
