"""Read source files into blocks of text; decoding problems become ReadError, never crashes."""

from pathlib import Path

from service.records import Block

TEXT_SUFFIXES = (".txt", ".md")


class ReadError(Exception):
    """A file that cannot be turned into text; the message names the file and the reason."""


def decode_text(raw: bytes, name: str) -> str:
    """Decode UTF-8 (with or without BOM), falling back to GB18030 as many office files are GBK."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ReadError(f"{name}：无法识别的文本编码（既不是 UTF-8 也不是 GB18030）")


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


def read_blocks(path: Path) -> list[Block]:
    """Read a supported file into blocks."""
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise ReadError(f"{path.name}：不支持的文件类型 {suffix or '（无扩展名）'}")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ReadError(f"{path.name}：无法读取文件（{error.strerror}）") from error
    text = decode_text(raw, path.name)
    return markdown_blocks(text) if suffix == ".md" else text_blocks(text)
