"""Read source files into blocks of text; decoding problems become ReadError, never crashes.

Formats: .txt and .md (UTF-8, UTF-16 with a BOM, or GB18030), .docx (python-docx: heading styles, tables in document
order) and .pdf with a text layer (pypdf: page numbers kept, running headers, footers and page
numbers dropped, lines broken by the layout joined back into paragraphs).
"""

import codecs
import logging
import math
import posixpath
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from service.records import TITLE_LEVEL, Block
from service.text import CLOSERS, COLONS, SENTENCE_ENDS, numbered_level

TEXT_SUFFIXES = (".txt", ".md")
SUPPORTED_SUFFIXES = (".txt", ".md", ".docx", ".pdf")


class ReadError(Exception):
    """A file that cannot be turned into text; the message names the file and the reason."""


class UnsupportedFileType(ReadError):
    """The file's type is not one we read; the message lists the supported types."""


class OverLimit(ReadError):
    """The file or what it expands to is over one of the configured Limits; the message names it."""


class FileTooLarge(OverLimit):
    """The file is over the configured size limit (settings.max_upload_bytes)."""


@dataclass(frozen=True)
class Limits:
    """What one document may cost, checked while reading so that memory and time stay bounded.

    A 3.8 MB .docx can hold a gigabyte of XML and a 40 KB one fourteen thousand paragraphs; the
    file size alone bounds neither. None means unlimited (the seeds an administrator indexes).
    """

    file_bytes: int | None = None  # the file itself
    unpacked_bytes: int | None = None  # a .docx's members once decompressed (declared sizes, which zipfile enforces)
    characters: int | None = None  # text read from the file
    passages: int | None = None  # passages it is cut into (each one is embedded: time)
    pdf_pages: int | None = None  # pages of a PDF (each page is parsed: time)
    # Decoded content-stream bytes a PDF page draws, and all pages together: what text extraction parses.
    pdf_page_bytes: int | None = None
    pdf_content_bytes: int | None = None


NO_LIMITS = Limits()


def size_text(size: int) -> str:
    """Bytes as the limits are written in messages (20 MB, 64 KB)."""
    if size >= 2**20:
        return f"{size / 2**20:g} MB"
    return f"{size / 2**10:g} KB" if size >= 2**10 else f"{size} 字节"


def measured_size(size: int) -> str:
    """A measured size for a message, one decimal (5.0 MB, 730 KB)."""
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.0f} KB"


def check_characters(count: int, limits: Limits, name: str) -> None:
    if limits.characters is not None and count > limits.characters:
        raise OverLimit(f"{name}：文字超过 {limits.characters:,} 字的上限（DJQA_MAX_DOCUMENT_CHARS），请拆分后再添加")


def decode_text(raw: bytes, name: str) -> str:
    """Decode UTF-8 (with or without BOM), UTF-16 with its BOM (Windows Notepad's 「Unicode」), else
    GB18030, as many office files are GBK."""
    utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    for encoding in ("utf-16",) if utf16 else ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ReadError(f"{name}：无法识别的文本编码（支持 UTF-8、带 BOM 的 UTF-16 和 GB18030）")


def text_blocks(text: str) -> list[Block]:
    """One block per line; blank lines are kept as empty blocks since cleaning uses them."""
    return [Block(line) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]


def markdown_blocks(text: str) -> list[Block]:
    """Lines, with `#` headings carrying their level."""
    blocks = []
    for block in text_blocks(text):
        stripped = block.text.lstrip()
        marks = len(stripped) - len(stripped.lstrip("#"))
        if 1 <= marks <= 6 and stripped[marks : marks + 1] == " ":
            blocks.append(Block(stripped[marks:].strip(), heading_level=marks))
        else:
            blocks.append(block)
    return blocks


# --- .docx -----------------------------------------------------------------------------------------

# Word stores built-in style names in English ("heading 1") whatever the UI language; WPS and
# hand-made templates use the Chinese names ("标题 1").
HEADING_STYLE = re.compile(r"^(?:heading|标题)\s*(\d)$", re.IGNORECASE)
TITLE_STYLES = ("title", "标题")
OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # old binary .doc, and password-protected Office files
CELL_SEPARATOR = "｜"


def style_level(paragraph) -> int | None:  # a docx Paragraph
    """Heading level from the paragraph's style or its base styles; TITLE_LEVEL for the title."""
    outline = paragraph._p.xpath("./w:pPr/w:outlineLvl/@w:val")  # direct outline level, rare
    style = paragraph.style
    while style is not None:
        name = (style.name or "").strip()
        if name.lower() in TITLE_STYLES:
            return TITLE_LEVEL
        if match := HEADING_STYLE.match(name):
            return int(match.group(1))
        outline = outline or style.element.xpath("./w:pPr/w:outlineLvl/@w:val")
        style = style.base_style
    # Outline level 9 is "body text"; 0..8 are heading levels 1..9.
    return int(outline[0]) + 1 if outline and int(outline[0]) < 9 else None


def paragraph_blocks(paragraph) -> list[Block]:  # a docx Paragraph
    """A paragraph's lines (soft line breaks become separate blocks); empty paragraphs stay blank."""
    level = style_level(paragraph)
    lines = [line.strip() for line in paragraph.text.split("\n")]
    if level is not None:
        heading = " ".join(line for line in lines if line)
        return [Block(heading, heading_level=level)] if heading else []
    return [Block(line) for line in lines]


def table_blocks(table) -> list[Block]:  # a docx Table
    """One block per row, cells joined; a merged cell repeats in python-docx and is kept once."""
    blocks = [Block("")]
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        if cells:
            blocks.append(Block(CELL_SEPARATOR.join(cells), table_row=True))
    return [*blocks, Block("")]


WORD_NS = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
RELATIONSHIPS_PART = "_rels/.rels"
MAIN_PART = "word/document.xml"  # where Word puts it; the package's relationships may name another


def main_part_name(package: zipfile.ZipFile) -> str:
    """The main document part, found as python-docx finds it: the package's officeDocument relationship."""
    from lxml import etree

    if RELATIONSHIPS_PART in package.namelist():
        with package.open(RELATIONSHIPS_PART) as relationships:
            for _, element in etree.iterparse(relationships, tag="{*}Relationship", resolve_entities=False):
                if element.get("Type", "").endswith("/officeDocument"):
                    return posixpath.normpath(element.get("Target", "")).lstrip("/")
    return MAIN_PART


def check_docx_size(path: Path, name: str, limits: Limits) -> None:
    """OverLimit when a .docx unpacks past limits.unpacked_bytes or its text past limits.characters.

    Both are known before python-docx builds its tree (which costs ~10x the XML in memory and a
    fraction of a millisecond per paragraph). The sizes are the declared ones, read from the zip's
    directory; zipfile stops every member at its declared size (and fails its CRC), so a package
    that lies about them cannot expand further. The text is counted here and only here, by a
    streaming parse of the main part that keeps one paragraph in memory at a time: each paragraph's
    text (table cells are paragraphs too) and one for its end.
    """
    if limits.unpacked_bytes is None and limits.characters is None:
        return
    from lxml import etree

    try:
        with zipfile.ZipFile(path) as package:
            unpacked = sum(member.file_size for member in package.infolist())
            if limits.unpacked_bytes is not None and unpacked > limits.unpacked_bytes:
                raise OverLimit(
                    f"{name}：解压后的内容（{size_text(unpacked)}）超过 {size_text(limits.unpacked_bytes)} 的上限"
                    "（DJQA_MAX_UNPACKED_BYTES），可能是压缩炸弹或内嵌了过大的图片"
                )
            main_part = main_part_name(package)
            if limits.characters is None or main_part not in package.namelist():
                return  # without a main part python-docx refuses the file
            characters = 0
            with package.open(main_part) as xml:
                for _, element in etree.iterparse(xml, events=("end",), resolve_entities=False, no_network=True):
                    if element.tag == f"{WORD_NS}t":
                        characters += len(element.text or "")
                    elif element.tag == f"{WORD_NS}p":
                        characters += 1
                        check_characters(characters, limits, name)
                        element.clear()
                        while element.getprevious() is not None:
                            del element.getparent()[0]
    except (zipfile.BadZipFile, etree.XMLSyntaxError, OSError, ValueError, KeyError) as error:
        raise ReadError(f"{name}：文件已损坏或不是有效的 Word 文档") from error


def docx_blocks(path: Path, name: str, limits: Limits = NO_LIMITS) -> list[Block]:
    """Paragraphs and table rows in body order; check_docx_size has held the text to limits.characters."""
    import docx
    from docx.table import Table

    with path.open("rb") as handle:
        if handle.read(4) == OLE_MAGIC:
            raise ReadError(f"{name}：文件已加密或是旧版 Word（.doc）格式，请另存为 .docx 后再添加")
    check_docx_size(path, name, limits)
    try:
        document = docx.Document(str(path))
        blocks: list[Block] = []
        for item in document.iter_inner_content():
            blocks += table_blocks(item) if isinstance(item, Table) else paragraph_blocks(item)
    except MemoryError:
        raise  # over the memory limit of the parse (isolate.py), not a damaged file
    # python-docx surfaces a damaged package as zip, XML, key or value errors of several libraries.
    except Exception as error:
        raise ReadError(f"{name}：文件已损坏或不是有效的 Word 文档") from error
    return blocks


# --- .pdf ------------------------------------------------------------------------------------------

PAGE_NUMBER = re.compile(
    r"^(?:[-–—－]\s*\d{1,4}\s*[-–—－]"
    r"|第\s*\d{1,4}\s*页(?:\s*[,，/／]?\s*共\s*\d{1,4}\s*页)?"
    r"|\d{1,4}(?:\s*[/／]\s*\d{1,4})?"
    r"|[Pp]age\s*\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?)$"
)
EDGE_LINES = 2  # running headers and footers sit in the first or last lines of a page
RUNNING_SHARE = 0.6  # a line at the page edge on this share of the pages is a running header/footer
SENTENCE_CLOSE = re.compile(rf"[{SENTENCE_ENDS}{COLONS}…][{CLOSERS}]*$")
FULL_LINE = 0.85  # a line this close to the text width was broken by the layout, not by the author
INDENT = 2  # layout columns beyond the left margin that mark a first-line indent (one CJK character)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Layout extraction pads justified lines and font changes with spaces; between CJK characters they are noise.
CJK_GAP = re.compile(r"(?<=[\u3000-\u9fff\uff00-\uffef])\s+(?=[\u3000-\u9fff\uff00-\uffef])")


@dataclass(frozen=True)
class Line:
    """A line of a PDF page: its text and how far it starts from the left edge (layout columns)."""

    text: str
    indent: int


def display_width(text: str) -> float:
    """Width in CJK characters: Latin letters and digits are about half as wide."""
    return sum(0.5 if ord(char) < 0x2E80 else 1.0 for char in text)


def layout_line(raw: str) -> Line:
    raw = CONTROL.sub("", raw).rstrip()
    text = CJK_GAP.sub("", " ".join(raw.split()))
    return Line(text, len(raw) - len(raw.lstrip()))


def content_streams(page) -> list:  # a pypdf PageObject -> its /Contents entries (references or streams)
    contents = page.get("/Contents")
    if contents is None:
        return []
    resolved = contents.get_object()
    return list(resolved) if isinstance(resolved, list) else [contents]


def check_pdf_content(reader, name: str, limits: Limits) -> None:  # a pypdf PdfReader
    """OverLimit when a page's content streams, or all pages' together, decode past the limits.

    Layout extraction parses every operator of a page's streams in pure Python, about 1.7 s per MB
    even when they draw nothing, so their decoded size is its cost. A stream that many pages share
    is decoded once (pypdf keeps it) but parsed again for every page: it counts for every page that
    draws it (an 806 KB file of 2,000 pages sharing 5 MB of empty text operators is hours of work).
    Checked before any text is extracted.
    """
    if limits.pdf_page_bytes is None and limits.pdf_content_bytes is None:
        return
    sizes: dict[object, int] = {}  # decoded size by object number: each stream is decoded once
    total = 0
    for number, page in enumerate(reader.pages, start=1):
        page_bytes = 0
        for entry in content_streams(page):
            key = (entry.idnum, entry.generation) if hasattr(entry, "idnum") else id(entry)
            if key not in sizes:
                stream = entry.get_object()
                sizes[key] = len(stream.get_data()) if hasattr(stream, "get_data") else 0
            page_bytes += sizes[key]
        total += page_bytes
        if limits.pdf_page_bytes is not None and page_bytes > limits.pdf_page_bytes:
            raise OverLimit(
                f"{name}：PDF 第 {number:,} 页的内容流解压后有 {measured_size(page_bytes)}，超过每页 "
                f"{size_text(limits.pdf_page_bytes)} 的上限（DJQA_MAX_PDF_PAGE_BYTES），文件可能含有大量无效的绘制指令"
            )
        if limits.pdf_content_bytes is not None and total > limits.pdf_content_bytes:
            raise OverLimit(
                f"{name}：PDF 前 {number:,} 页的内容流解压后共 {measured_size(total)}，超过 "
                f"{size_text(limits.pdf_content_bytes)} 的上限（DJQA_MAX_PDF_CONTENT_BYTES），"
                "文件可能含有大量无效的绘制指令；多个页面共用的内容按每页计算"
            )


def pdf_pages(path: Path, name: str, limits: Limits = NO_LIMITS) -> list[list[Line]]:
    """Non-empty lines of each page's text layer, with their indentation."""
    import pypdf
    from pypdf.errors import DependencyError, FileNotDecryptedError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings on damaged files are ours to report
    try:
        reader = pypdf.PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ReadError(f"{name}：PDF 已加密，需要先解除密码保护")
        if limits.pdf_pages is not None:
            # The page tree's declared /Count costs nothing; counting the pages walks the whole tree
            # (4 s for 32,768 empty pages), so that comes second, for a file whose /Count lies.
            # pypdf types a dictionary's entries as any PDF object, so indexing them is unchecked.
            declared = lambda: int(reader.trailer["/Root"]["/Pages"]["/Count"])  # type: ignore[index]  # noqa: E731
            for count in (declared, lambda: len(reader.pages)):
                if (page_count := count()) > limits.pdf_pages:
                    limit = f"{limits.pdf_pages:,} 页的上限（DJQA_MAX_PDF_PAGES）"
                    raise OverLimit(f"{name}：PDF 共 {page_count:,} 页，超过 {limit}")
        check_pdf_content(reader, name, limits)
        texts: list[str] = []
        characters = 0
        for page in reader.pages:
            # Layout mode keeps horizontal positions, which is how a first-line indent shows.
            texts.append(page.extract_text(extraction_mode="layout") or "")
            characters += len(texts[-1].strip())
            check_characters(characters, limits, name)
    except ReadError:
        raise
    except (DependencyError, FileNotDecryptedError) as error:
        raise ReadError(f"{name}：PDF 已加密，需要先解除密码保护（{error}）") from error
    except MemoryError:
        raise  # over the memory limit of the parse (isolate.py), not a damaged file
    # pypdf raises many kinds of errors on malformed files; any of them means the file is unusable.
    except Exception as error:
        raise ReadError(f"{name}：PDF 文件已损坏，无法读取（{type(error).__name__}）") from error
    pages = [[layout_line(raw) for raw in text.split("\n")] for text in texts]
    return [[line for line in lines if line.text] for lines in pages]


def edge_key(text: str) -> str:
    """Running headers often carry the page number ("第 3 页 共 10 页"): compare without digits."""
    return re.sub(r"\d+", "#", text)


def strip_page_edges(pages: list[list[Line]]) -> list[list[Line]]:
    """Drop page numbers and lines repeated at the top or bottom of most pages."""
    edge_counts: Counter[str] = Counter()
    for lines in pages:
        edge_counts.update({edge_key(line.text) for line in lines[:EDGE_LINES] + lines[-EDGE_LINES:]})
    needed = max(2, math.ceil(RUNNING_SHARE * len(pages)))
    running = {key for key, count in edge_counts.items() if count >= needed}

    def is_edge(line: Line) -> bool:
        return bool(PAGE_NUMBER.match(line.text)) or edge_key(line.text) in running

    stripped = []
    for lines in pages:
        start, end = 0, len(lines)
        while start < min(end, EDGE_LINES + 1) and is_edge(lines[start]):
            start += 1
        while end > max(start, len(lines) - EDGE_LINES - 1) and is_edge(lines[end - 1]):
            end -= 1
        stripped.append(lines[start:end])
    return stripped


def join_lines(pages: list[list[Line]]) -> list[Block]:
    """Paragraphs from layout lines, each with the page it starts on.

    A line that fills the text width continues into the next line unless that one starts a paragraph:
    it is indented (when the document indents its paragraphs), or it starts a numbered heading. In a
    document without indents, a full line that closes a sentence is taken as a paragraph's end.
    Short lines (headings, a paragraph's last line) always end a block.
    """
    lines = [(number, line) for number, page_lines in enumerate(pages, start=1) for line in page_lines]
    widths = sorted(display_width(line.text) for _, line in lines)
    text_width = widths[int(0.9 * (len(widths) - 1))] if widths else 0.0
    margin = min((line.indent for _, line in lines), default=0)
    full = [display_width(line.text) >= FULL_LINE * text_width for _, line in lines]
    indented = [line.indent >= margin + INDENT for _, line in lines]
    # Indents are a signal only if full lines (the body of paragraphs) sit at the margin.
    uses_indents = any(indented) and sum(f and not i for f, i in zip(full, indented, strict=True)) > sum(full) / 2
    blocks: list[Block] = []
    current, current_page = "", None
    for position, (page, line) in enumerate(lines):
        if not current:
            current_page = page
        latin_seam = current[-1:].isascii() and current[-1:].isalnum() and line.text[:1].isascii()
        current += (" " if latin_seam and line.text[:1].isalnum() else "") + line.text
        following = lines[position + 1][1] if position + 1 < len(lines) else None
        continues = (
            following is not None
            and full[position]
            and numbered_level(following.text) is None
            and (not indented[position + 1] if uses_indents else not SENTENCE_CLOSE.search(line.text))
        )
        if not continues:
            blocks.append(Block(current, page=current_page))
            current = ""
    return blocks


def pdf_blocks(path: Path, name: str, limits: Limits = NO_LIMITS) -> list[Block]:
    """Paragraph blocks of a PDF's text layer; a PDF without one (a scan) needs OCR first."""
    pages = pdf_pages(path, name, limits)
    if not any(re.search(r"\w", line.text) for lines in pages for line in lines):
        raise ReadError(f"{name}：PDF 中没有可提取的文字（可能是扫描件），需要先做 OCR")
    return join_lines(strip_page_edges(pages))


# --- any file --------------------------------------------------------------------------------------


def check_file(path: Path, name: str, max_bytes: int | None = None) -> None:
    """Type, presence and size checks shared by the CLI and the upload API."""
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = "、".join(SUPPORTED_SUFFIXES)
        raise UnsupportedFileType(f"{name}：不支持的文件类型 {suffix or '（无扩展名）'}，支持的类型：{supported}")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ReadError(f"{name}：无法读取文件（{error.strerror}）") from error
    if size == 0:
        raise ReadError(f"{name}：文件是空的")
    if max_bytes is not None and size > max_bytes:
        raise FileTooLarge(f"{name}：文件大小 {size / 2**20:.1f} MB 超过上限 {max_bytes / 2**20:.0f} MB")


def read_blocks(path: Path, name: str | None = None, limits: Limits = NO_LIMITS) -> list[Block]:
    """Read a supported file into blocks; `name` is the user's file name (the path may be a temp file).

    OverLimit (a ReadError) as soon as the file passes one of `limits`.
    """
    name = name or path.name
    check_file(path, name, limits.file_bytes)
    suffix = Path(name).suffix.lower()
    if suffix == ".docx":
        return docx_blocks(path, name, limits)
    if suffix == ".pdf":
        return pdf_blocks(path, name, limits)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ReadError(f"{name}：无法读取文件（{error.strerror}）") from error
    text = decode_text(raw, name)
    check_characters(len(text), limits, name)
    return markdown_blocks(text) if suffix == ".md" else text_blocks(text)
