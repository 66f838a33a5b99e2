"""What llama-quantize changes in the metadata it copies, beyond the file type: its
``--override-kv KEY=TYPE:VALUE`` entries and, with an importance matrix, the ``quantize.imatrix.*``
keys saying which one. Each edit removes the key and sets it again at the end, in order, as ggml's
``gguf_set_val_*`` does, so the metadata comes out in llama-quantize's order.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ParameterError
from .container import BOOL, FLOAT32, STRING, UINT32, Value

# llama.cpp's llama_model_kv_override: a 128-byte key and a 128-byte string value, NUL included.
MAX_KEY_BYTES = 127
MAX_STRING_BYTES = 127

MetadataEdits = list[tuple[str, Value]]


def parse_kv_overrides(entries: Any) -> MetadataEdits:
    """["KEY=TYPE:VALUE", ...] (TYPE int, float, bool or str, as llama-quantize's --override-kv)
    -> the edits, each value in the GGUF type llama-quantize writes: an int as u32 (its absolute
    value), a float as f32, a bool, a string of at most 127 bytes."""
    if entries is None:
        return []
    if isinstance(entries, str):
        entries = [entries]
    edits = []
    for entry in entries:
        if not isinstance(entry, str) or "=" not in entry:
            raise ParameterError(f"override_kv entries are KEY=TYPE:VALUE (TYPE int, float, bool or str), as "
                                 f"llama-quantize's --override-kv; got {entry!r}")
        key, _, typed = entry.partition("=")
        kind, colon, text = typed.partition(":")
        if not key or len(key.encode()) > MAX_KEY_BYTES:
            raise ParameterError(f"override_kv {entry!r}: the key must have 1 to {MAX_KEY_BYTES} bytes")
        if not colon or kind not in ("int", "float", "bool", "str"):
            raise ParameterError(f"override_kv {entry!r}: the value needs a type, int:, float:, bool: or str: "
                                 "(e.g. general.name=str:My model)")
        edits.append((key, _value(entry, kind, text)))
    return edits


def _value(entry: str, kind: str, text: str) -> Value:
    if kind == "int":
        try:
            number = int(text)
        except ValueError:
            raise ParameterError(f"override_kv {entry!r}: {text!r} is not a whole number") from None
        if abs(number) >= 2**32:
            raise ParameterError(f"override_kv {entry!r}: llama-quantize writes integers as u32; {text} does not fit")
        return Value(UINT32, abs(number))  # llama-quant.cpp: gguf_set_val_u32(key, abs(value))
    if kind == "float":
        try:
            number = float(text)
        except ValueError:
            raise ParameterError(f"override_kv {entry!r}: {text!r} is not a number") from None
        if not math.isfinite(number) or abs(number) > 3.4028234663852886e38:
            raise ParameterError(f"override_kv {entry!r}: {text!r} is not a finite float32")
        return Value(FLOAT32, number)
    if kind == "bool":
        if text not in ("true", "false"):
            raise ParameterError(f"override_kv {entry!r}: a bool is true or false; got {text!r}")
        return Value(BOOL, text == "true")
    if len(text.encode()) > MAX_STRING_BYTES:
        raise ParameterError(f"override_kv {entry!r}: llama.cpp's overrides hold at most {MAX_STRING_BYTES} bytes "
                             "of string")
    return Value(STRING, text)


def truncated(text: str, limit: int = MAX_STRING_BYTES) -> str:
    """``text`` cut to ``limit`` bytes on a character boundary (llama-quantize's strncpy into its
    128-byte override value)."""
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def edited(metadata: dict[str, Any], edits: MetadataEdits) -> dict[str, Any]:
    """``metadata`` with every edit applied in order: the key removed, then set at the end."""
    out = dict(metadata)
    for key, value in edits:
        out.pop(key, None)
        out[key] = value
    return out
