"""Make .docx and .pdf fixtures in tests: python-docx for Word, fpdf2 with a CJK font for PDF.

The only CJK fonts on Debian are OpenType collections (.ttc, CFF outlines). fpdf2 embeds CFF fonts
with an encoding CMap that pypdf decodes one byte at a time, so text of more than 255 distinct
characters comes out garbled; Word and WPS embed TrueType outlines with Identity-H instead. We
therefore subset the collection to the characters a test needs and convert it to TrueType, which
fpdf2 embeds the way office suites do.
"""

from collections.abc import Sequence
from pathlib import Path

CJK_COLLECTIONS = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc"),
)
SIMPLIFIED_CHINESE_FACE = 2  # face order in Noto CJK collections: JP, KR, SC, TC, HK
ASCII = "".join(chr(code) for code in range(32, 127))


def cjk_collection() -> Path | None:
    return next((path for path in CJK_COLLECTIONS if path.is_file()), None)


def truetype_subset(text: str, target: Path) -> Path:
    """A TrueType font holding the glyphs of `text` (and ASCII), converted from the CJK collection."""
    from fontTools import subset
    from fontTools.pens.cu2quPen import Cu2QuPen
    from fontTools.pens.ttGlyphPen import TTGlyphPen
    from fontTools.ttLib import TTFont, newTable

    source = cjk_collection()
    if source is None:
        raise FileNotFoundError("no CJK font collection found (apt-get install fonts-noto-cjk)")
    font = TTFont(source, fontNumber=SIMPLIFIED_CHINESE_FACE)
    options = subset.Options()
    options.layout_features = []
    options.name_IDs = ["*"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=text + ASCII + "　“”")
    subsetter.subset(font)

    glyph_order = font.getGlyphOrder()
    glyph_set = font.getGlyphSet()
    glyf = newTable("glyf")
    glyf.glyphOrder, glyf.glyphs = glyph_order, {}
    for glyph_name in glyph_order:
        pen = TTGlyphPen(glyph_set)
        glyph_set[glyph_name].draw(Cu2QuPen(pen, max_err=1.0, reverse_direction=True))
        glyf.glyphs[glyph_name] = pen.glyph()
    del font["CFF "]
    for table in ("VORG",):
        if table in font:
            del font[table]
    font["loca"], font["glyf"] = newTable("loca"), glyf
    maxp = font["maxp"]
    maxp.tableVersion, maxp.numGlyphs = 0x00010000, len(glyph_order)
    for field in ("maxZones", "maxTwilightPoints", "maxStorage", "maxFunctionDefs", "maxInstructionDefs"):
        setattr(maxp, field, 0)
    for field in ("maxStackElements", "maxSizeOfInstructions", "maxComponentElements"):
        setattr(maxp, field, 0)
    maxp.maxZones = 1
    post = font["post"]
    post.formatType, post.extraNames, post.mapping = 2.0, [], {}
    font["head"].indexToLocFormat, font["head"].glyphDataFormat = 0, 0
    font.sfntVersion = "\x00\x01\x00\x00"
    font.save(target)
    return target


def make_pdf(
    path: Path,
    paragraphs: Sequence[str],
    font: Path,
    header: str | None = None,
    footer: str | None = None,
    page_number: str | None = "- {page} -",
    new_page_before: Sequence[int] = (),
) -> Path:
    """A text PDF: paragraphs wrapped by the layout, optional running header, footer and page numbers.

    `page_number` is a format with {page} and {pages}; paragraphs whose index is in new_page_before
    start a new page; leading full-width spaces of a paragraph indent its first line.
    """
    from fpdf import FPDF

    class Pages(FPDF):
        def header(self) -> None:
            if header:
                self.set_font("cjk", size=9)
                self.cell(0, 6, header, align="C", new_x="LMARGIN", new_y="NEXT")
                self.ln(4)

        def footer(self) -> None:
            self.set_y(-18)
            self.set_font("cjk", size=9)
            if footer:
                self.cell(0, 5, footer, align="C", new_x="LMARGIN", new_y="NEXT")
            if page_number:
                self.cell(0, 5, page_number.format(page=self.page_no(), pages="{nb}"), align="C")

    pdf = Pages(format=(148, 210))  # A5: short pages, so paragraphs cross pages
    pdf.add_font("cjk", "", str(font))
    pdf.set_auto_page_break(True, margin=25)
    pdf.add_page()
    for number, paragraph in enumerate(paragraphs):
        if number in new_page_before:
            pdf.add_page()
        pdf.set_font("cjk", size=11)
        # Leading full-width spaces become a real first-line indent, as office suites lay it out.
        text = paragraph.lstrip("　")
        pdf.set_x(pdf.l_margin + (len(paragraph) - len(text)) * 11 * 0.3528)
        pdf.write(7, text)
        pdf.ln(7)
    pdf.output(str(path))
    return path


def make_docx(
    path: Path,
    title: str | None,
    items: Sequence[tuple[str, str] | list[list[str]]],
) -> Path:
    """A Word file: items are (style name, text) or a table (rows of cells); missing styles are added."""
    import docx
    from docx.enum.style import WD_STYLE_TYPE

    document = docx.Document()
    for style in {item[0] for item in items if isinstance(item, tuple)}:
        if style not in [existing.name for existing in document.styles]:
            document.styles.add_style(style, WD_STYLE_TYPE.PARAGRAPH)  # e.g. WPS's "标题 1"
    if title:
        document.add_paragraph(title, style="Title")
    for item in items:
        if isinstance(item, list):
            table = document.add_table(rows=len(item), cols=len(item[0]))
            for row, cells in zip(table.rows, item, strict=True):
                for cell, text in zip(row.cells, cells, strict=True):
                    cell.text = text
        else:
            style, text = item
            document.add_paragraph(text, style=style)
    document.save(str(path))
    return path


WORD_MAIN = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
PACKAGE_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
)
PACKAGE_RELATIONSHIPS = (
    '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
    'relationships"><Relationship Id="rId1" Target="word/document.xml" Type="http://schemas.openxmlformats.org/'
    'officeDocument/2006/relationships/officeDocument"/></Relationships>'
)


def make_docx_bomb(
    path: Path, xml_megabytes: int, paragraph: str = "党建工作要抓实抓细。", main_part: str = "word/document.xml"
) -> Path:
    """A real .docx whose main part is `xml_megabytes` MB of one repeated paragraph: it deflates ~300:1.

    `main_part`: where the package keeps it (Word's name by default; its relationships say where).
    """
    import zipfile

    body = f"<w:p><w:r><w:t>{paragraph}</w:t></w:r></w:p>".encode()
    chunk = body * (2**20 // len(body))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as package:
        package.writestr("[Content_Types].xml", PACKAGE_TYPES.replace("word/document.xml", main_part))
        package.writestr("_rels/.rels", PACKAGE_RELATIONSHIPS.replace("word/document.xml", main_part))
        with package.open(main_part, "w", force_zip64=True) as main:
            main.write(f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{WORD_MAIN}"><w:body>'.encode())
            for _ in range(xml_megabytes):
                main.write(chunk)
            main.write(b"</w:body></w:document>")
    return path


def make_blank_pdf(path: Path, pages: int) -> Path:
    """A PDF of `pages` empty A4 pages (pypdf)."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    with path.open("wb") as handle:
        writer.write(handle)
    return path


def make_shared_stream_pdf(
    path: Path, pages: int, stream_megabytes: float, operators: bytes = b"BT /F1 1 Tf 72 72 Td () Tj ET\n"
) -> Path:
    """A small PDF whose pages all draw one shared content stream of text operators that show nothing.

    `BT /F1 1 Tf () Tj ET`, empty strings: every limit on the file (size, pages, characters,
    pypdf's decompression cap) passes, while extracting each page's text reparses the whole stream.
    Written as raw bytes: the stream compresses to a few kilobytes and is referenced by every page.
    `operators` are repeated to fill the stream (other ones can show text).
    """
    import zlib

    content = zlib.compress(operators * max(1, int(stream_megabytes * 2**20 / len(operators))), 9)
    first_page = 5  # objects 1-4: catalog, page tree, font, the shared stream
    kids = " ".join(f"{first_page + n} 0 R" for n in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    resources = b"/Resources << /Font << /F1 3 0 R >> >>"
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] " + resources + b" /Contents 4 0 R >>"
    objects += [page] * pages
    body, offsets = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"), []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(body))
    return path
