"""Receive an upload form: multipart/form-data streamed into temp files, size limits kept while reading.

Starlette's own form parser accepts files of any size before a route sees them; here each file is
counted as its bytes arrive and the upload is refused as soon as one passes the limit. The files get
generated names in a folder the caller owns; the client's file name is only carried along as text.
"""

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from service.ingest.read import size_text

# After a file passes the limit the rest of the body is read and dropped up to this many bytes, so
# that an ordinary client gets the 413 answer instead of a reset connection; beyond it we stop reading.
DRAIN_BYTES = 32 * 1024 * 1024
# python-multipart refuses a header line over 4 KB with a bare parse error; it reads up to
# MAX_HEADER_BYTES here, so that a file name over MAX_NAME_BYTES is refused with a message saying so.
MAX_NAME_BYTES = 4096
MAX_HEADER_BYTES = 64 * 1024
MAX_TEXT_BYTES = 1024  # a text field of the form (a collection's name) is short


class FormError(Exception):
    """The body is not a usable upload form; the message (Chinese) says why."""


class FileOverLimit(FormError):
    """A file passed the size limit while it was being received."""

    def __init__(self, name: str, limit: int) -> None:
        self.name, self.limit = name, limit
        super().__init__(f"{name}：文件超过大小上限 {size_text(limit)}，已停止接收")


class TooManyFiles(FormError):
    """More files in one upload than allowed."""


class NotAForm(FormError):
    """The body is not multipart/form-data at all."""


@dataclass(frozen=True)
class ReceivedFile:
    name: str  # as the client sent it: text for messages and the doc id, never a path
    path: Path  # the generated temp file holding its bytes
    size: int


def decode_header(raw: bytes) -> str:
    """Browsers send file names as raw UTF-8 in the header; python-multipart hands them over as latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class FormReader:
    """Callbacks for python-multipart: parts of the wanted field go to files, everything else is dropped."""

    def __init__(
        self, field: str, folder: Path, max_file_bytes: int, max_files: int, text_fields: Collection[str] = ()
    ) -> None:
        self.field, self.folder = field, folder
        self.text_fields = {name.encode() for name in text_fields}
        self.texts: dict[str, str] = {}
        self.text_name: bytes | None = None
        self.text = b""
        self.max_file_bytes, self.max_files = max_file_bytes, max_files
        self.files: list[ReceivedFile] = []
        self.header_name, self.header_value = b"", b""
        self.disposition = b""
        self.name: str | None = None
        self.output: BinaryIO | None = None
        self.size = 0
        self.problem: FormError | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.disposition, self.name, self.size = b"", None, 0
        self.text_name, self.text = None, b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.strip().lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        filename = options.get(b"filename")
        if not self.problem and filename is None and options.get(b"name") in self.text_fields:
            self.text_name = options.get(b"name")
            return
        # A form's empty file input arrives as a part with filename="": nothing was chosen.
        if self.problem or options.get(b"name") != self.field.encode() or not filename:
            return
        if len(filename) > MAX_NAME_BYTES:
            shown = decode_header(filename)[:40]
            self.problem = FormError(
                f"文件名过长（{len(filename):,} 字节，最多 {MAX_NAME_BYTES:,} 字节）：{shown}…，请缩短文件名后重新上传"
            )
            return
        if len(self.files) >= self.max_files:
            self.problem = TooManyFiles(f"一次最多上传 {self.max_files} 个文件")
            return
        self.name = decode_header(filename)
        self.output = (self.folder / f"upload-{len(self.files)}").open("wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.text_name is not None:
            self.text += data[start:end]
            if len(self.text) > MAX_TEXT_BYTES:
                self.problem = FormError(f"表单字段 {self.text_name.decode()} 过长")
                self.text_name = None
            return
        if self.output is None:
            return
        self.size += end - start
        if self.size > self.max_file_bytes:
            self.output.close()
            self.output = None
            self.problem = FileOverLimit(self.name or "", self.max_file_bytes)
            return
        self.output.write(data[start:end])

    def on_part_end(self) -> None:
        if self.text_name is not None:
            try:
                self.texts[self.text_name.decode()] = self.text.decode("utf-8")
            except UnicodeDecodeError:
                self.problem = FormError(f"表单字段 {self.text_name.decode()} 不是 UTF-8 文字")
            self.text_name = None
        if self.output is not None:
            self.output.close()
            self.output = None
            path = self.folder / f"upload-{len(self.files)}"
            self.files.append(ReceivedFile(self.name or "", path, self.size))

    def close(self) -> None:
        if self.output is not None:
            self.output.close()


async def receive_files(
    chunks: AsyncIterator[bytes],
    content_type: str,
    field: str,
    folder: Path,
    max_file_bytes: int,
    max_files: int,
    text_fields: Collection[str] = (),
) -> tuple[list[ReceivedFile], dict[str, str]]:
    """The files sent in form field `field`, written to `folder`, and the values of the `text_fields`
    that were sent (short UTF-8 text); FormError when the form is unusable.

    Other fields are ignored. The caller deletes `folder` afterwards, whatever happened.
    """
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise NotAForm("请以 multipart/form-data 表单上传文件（字段名 files）")
    boundary = options.get(b"boundary")
    if not boundary:
        raise FormError("表单缺少 boundary 参数")
    reader = FormReader(field, folder, max_file_bytes, max_files, text_fields)
    parser = MultipartParser(boundary, reader.callbacks(), max_header_size=MAX_HEADER_BYTES)
    dropped = 0
    try:
        async for chunk in chunks:
            if reader.problem is None:
                parser.write(chunk)
            else:
                dropped += len(chunk)
                if dropped > DRAIN_BYTES:
                    break
        if reader.problem is None:
            parser.finalize()
    except MultipartParseError as error:
        if "header size" in str(error):
            raise FormError(f"表单的某个头部超过 {MAX_HEADER_BYTES // 1024} KB（文件名过长？），无法解析") from error
        raise FormError("表单格式错误，无法解析上传的文件") from error
    finally:
        reader.close()
    if reader.problem is not None:
        raise reader.problem
    return reader.files, reader.texts
