"""Reads a SentencePiece model file (``tokenizer.model``, a protocol-buffer ``ModelProto``) without
the sentencepiece package: the pieces with their scores and types, the model type, and the
normalizer settings llama.cpp's "llama" tokenizer depends on.

Only the fields below are decoded; every other field is skipped by its wire type. The file comes
from the model folder, so it is read defensively: every length is checked against what is left,
and anything malformed is one FileFormatError naming the file."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from arrowquant.errors import FileFormatError

# SentencePiece.Type (sentencepiece_model.proto); GGUF's token types use the same numbers.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# TrainerSpec.ModelType
UNIGRAM, BPE, WORD, CHAR = 1, 2, 3, 4
MODEL_TYPE_NAMES = {UNIGRAM: "unigram", BPE: "bpe", WORD: "word", CHAR: "char"}

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
MAX_FILE_BYTES = 64 << 20  # the largest real vocabularies are a few MB


@dataclass
class SentencePieceModel:
    pieces: list[tuple[str, float, int]] = field(default_factory=list)  # (piece, score, type)
    model_type: int = UNIGRAM
    byte_fallback: bool = False
    normalizer_name: str = ""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    has_precompiled_charsmap: bool = False
    precompiled_charsmap: bytes = b""  # the normalizer's compiled rules (llama.cpp's t5 tokenizer applies them)


def _fields(data: bytes, where: str):
    """(field number, wire type, value) of one message: ints for varints and fixed fields, bytes
    for length-delimited ones."""
    pos, end = 0, len(data)

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise FileFormatError(f"{where}: a truncated or overlong number")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while pos < end:
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            yield number, wire, varint()
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            if pos + size > end:
                raise FileFormatError(f"{where}: truncated")
            yield number, wire, data[pos:pos + size]
            pos += size
        elif wire == LENGTH:
            size = varint()
            if size > end - pos:
                raise FileFormatError(f"{where}: a field of {size} bytes runs past the end")
            yield number, wire, data[pos:pos + size]
            pos += size
        else:
            raise FileFormatError(f"{where}: wire type {wire} (field {number}) is not a protocol-buffer type it uses")


def _text(value, where: str) -> str:
    if not isinstance(value, bytes):
        raise FileFormatError(f"{where}: expected a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise FileFormatError(f"{where}: a piece is not UTF-8") from None


def _int32(value: int) -> int:
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def read_sentencepiece_model(path: Path, max_pieces: int | None = None) -> SentencePieceModel:
    """The fields above of a SentencePiece model file; with ``max_pieces`` (the model's vocabulary
    size) a file holding more pieces is refused as soon as the count passes it, not after parsing
    all of them."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise FileFormatError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise FileFormatError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MB; not a SentencePiece model")
    where = str(path)
    model = SentencePieceModel()
    has_trainer_spec = False
    for number, wire, value in _fields(data, where):
        if number == 1 and wire == LENGTH:  # repeated SentencePiece pieces
            piece, score, kind = None, 0.0, NORMAL
            for n, w, v in _fields(value, where):
                if n == 1 and w == LENGTH:
                    piece = _text(v, where)
                elif n == 2 and w == FIXED32:
                    score = struct.unpack("<f", v)[0]
                elif n == 3 and w == VARINT:
                    kind = _int32(v)
            if piece is None:
                raise FileFormatError(f"{where}: piece {len(model.pieces)} has no text")
            if kind not in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE):
                raise FileFormatError(f"{where}: piece {len(model.pieces)} has unknown type {kind}")
            model.pieces.append((piece, score, kind))
            if max_pieces is not None and len(model.pieces) > max_pieces:
                raise FileFormatError(f"{where}: more than {max_pieces} pieces, the model's vocab_size: not the "
                                      "tokenizer of this model")
        elif number == 2 and wire == LENGTH:  # TrainerSpec
            has_trainer_spec = True
            for n, w, v in _fields(value, where):
                if n == 3 and w == VARINT:
                    model.model_type = _int32(v)
                elif n == 35 and w == VARINT:
                    model.byte_fallback = bool(v)
        elif number == 3 and wire == LENGTH:  # NormalizerSpec
            for n, w, v in _fields(value, where):
                if n == 1 and w == LENGTH:
                    model.normalizer_name = _text(v, where)
                elif n == 2 and w == LENGTH:
                    model.has_precompiled_charsmap, model.precompiled_charsmap = len(v) > 0, bytes(v)
                elif n == 3 and w == VARINT:
                    model.add_dummy_prefix = bool(v)
                elif n == 4 and w == VARINT:
                    model.remove_extra_whitespaces = bool(v)
                elif n == 5 and w == VARINT:
                    model.escape_whitespaces = bool(v)
    if not model.pieces or not has_trainer_spec:
        raise FileFormatError(f"{where}: no {'pieces' if not model.pieces else 'trainer spec'}; not a SentencePiece "
                              "model")
    return model
