"""FP8 checkpoints as a source: E4M3FN and E5M2 tensors widened to float32 with their scale
applied, the way the runtimes that ship them dequantize them.

Scale conventions (all multiply: weight = fp8 value x scale):

- ComfyUI `scaled_fp8`: a marker tensor named `scaled_fp8` and, per layer, `P.scale_weight` (one
  value) beside `P.weight`, plus `P.scale_input` for its activations;
- `P.weight_scale` (compressed-tensors, ModelOpt, FBGEMM): one value, or one per output channel
  (shape `[out]` or `[out, 1]`), plus `P.input_scale`;
- `P.weight_scale_inv` (DeepSeek-V3, Qwen3-FP8 and the other FP8 language-model releases): one
  value per 128 x 128 block of a 2-D weight (shape `[ceil(out / 128), ceil(in / 128)]`); despite
  its name their reference `weight_dequant` multiplies by it.

The scale tensors, the activation scales and the marker describe the FP8 weights; a weight that is
quantized or converted takes them with it (they are never written as weights), a weight carried
through unchanged keeps them.
"""

from __future__ import annotations

import functools
import math
from typing import Iterable, Iterator

import numpy as np

from .errors import FileFormatError

FP8_DTYPES = ("F8_E4M3", "F8_E5M2")
BLOCK = 128
MARKER = "scaled_fp8"
# Companion tensor suffixes: (suffix replacing "weight", kind). Weight scales are applied; input
# scales describe the activations of an FP8 matrix product and go with their weight.
WEIGHT_SCALES = {"scale_weight": "comfyui", "weight_scale": "weight_scale", "weight_scale_inv": "block"}
INPUT_SCALES = ("scale_input", "input_scale")
SCALE_DTYPES = ("F32", "F16", "BF16", "F64")


@functools.cache
def decode_table(dtype: str) -> np.ndarray:
    """The float32 value of each of the 256 codes (OCP FP8: E4M3FN has no infinities, its
    S.1111.111 codes are NaN; E5M2 is IEEE-like, exponent 31 holds Inf and NaN)."""
    exp_bits, man_bits, bias = (4, 3, 7) if dtype == "F8_E4M3" else (5, 2, 15)
    codes = np.arange(256)
    sign = np.where(codes >> 7, -1.0, 1.0)
    exponent = (codes >> man_bits) & ((1 << exp_bits) - 1)
    mantissa = codes & ((1 << man_bits) - 1)
    fraction = mantissa / (1 << man_bits)
    magnitude = np.where(exponent == 0, fraction * 2.0 ** (1 - bias), (1 + fraction) * 2.0 ** (exponent - bias))
    top = (1 << exp_bits) - 1
    if dtype == "F8_E4M3":
        magnitude = np.where((exponent == top) & (mantissa == (1 << man_bits) - 1), np.nan, magnitude)
    else:
        magnitude = np.where(exponent == top, np.where(mantissa == 0, np.inf, np.nan), magnitude)
    table = (sign * magnitude).astype(np.float32)
    table.setflags(write=False)
    return table


class Fp8Scale:
    """How one FP8 weight is scaled: ``kind`` "tensor" (one value), "channel" (one per output
    channel) or "block" (one per 128 x 128 block); ``values`` float32; ``name`` the scale tensor."""

    __slots__ = ("kind", "values", "name")

    def __init__(self, kind: str, values: np.ndarray, name: str) -> None:
        self.kind, self.values, self.name = kind, values, name


def widen(codes: np.ndarray, dtype: str, scale: Fp8Scale | None) -> np.ndarray:
    """A float32 copy of an FP8 tensor (``codes``: its bytes as uint8, in the tensor's shape),
    multiplied by its scale in float32, as torch's ``w.to(torch.float32) * scale`` does."""
    values = decode_table(dtype)[codes]
    if scale is None:
        return values
    if scale.kind == "tensor":
        values *= scale.values.reshape(())
    elif scale.kind == "channel":
        rows = values.reshape(values.shape[0], -1)  # a view: scaled in place
        rows *= scale.values.reshape(-1, 1)
    else:
        cols = values.shape[1]
        for block_row in range(scale.values.shape[0]):
            per_column = np.repeat(scale.values[block_row], BLOCK)[:cols]
            values[block_row * BLOCK:(block_row + 1) * BLOCK] *= per_column
    return values


# Float32 bytes an FP8 tensor is widened into at a time where its consumer takes pieces (GGUF).
WIDEN_PIECE_BYTES = 8 << 20


def widened_pieces(codes: np.ndarray, dtype: str, scale: Fp8Scale | None,
                   piece_bytes: int | None = None) -> Iterator[np.ndarray]:
    """widen() a few rows (of the first dimension) at a time, about ``piece_bytes`` of float32
    each (a multiple of 128 rows for block scales), so that a consumer encoding row by row never
    holds the whole tensor in float32."""
    piece_bytes = piece_bytes or WIDEN_PIECE_BYTES
    if codes.ndim < 2:
        yield widen(codes, dtype, scale)
        return
    row_bytes = 4 * (codes.size // codes.shape[0] or 1)
    step = max(1, piece_bytes // row_bytes)
    if scale is not None and scale.kind == "block":
        step = max(BLOCK, step // BLOCK * BLOCK)
    for start in range(0, codes.shape[0], step):
        stop = min(start + step, codes.shape[0])
        part = scale
        if scale is not None and scale.kind == "channel":
            part = Fp8Scale("channel", scale.values.reshape(-1)[start:stop], scale.name)
        elif scale is not None and scale.kind == "block":
            part = Fp8Scale("block", scale.values[start // BLOCK:(stop + BLOCK - 1) // BLOCK], scale.name)
        yield widen(codes[start:stop], dtype, part)


class Fp8Layout:
    """The FP8 weights of a checkpoint, their scales, and which weight each scale, activation scale
    or marker belongs to."""

    def __init__(self) -> None:
        self.scales: dict[str, Fp8Scale | None] = {}  # FP8 tensor name -> its scale
        self.owner: dict[str, str] = {}  # companion tensor name -> the weight it describes ("" for the marker)

    def is_fp8(self, name: str) -> bool:
        return name in self.scales

    def companions_of(self, weights: Iterable[str]) -> set[str]:
        """The scale tensors of ``weights``, and the marker if every FP8 weight is among them."""
        chosen = set(weights)
        out = {c for c, w in self.owner.items() if w in chosen}
        if self.scales and all(name in chosen for name in self.scales):
            out |= {c for c, w in self.owner.items() if w == ""}
        return out


def _owner(name: str) -> tuple[str, str] | None:
    """(weight name, companion kind) if ``name`` is a scale tensor or the marker."""
    if name == MARKER or name.endswith("." + MARKER):
        return "", "marker"
    prefix, dot, suffix = name.rpartition(".")
    if not dot:
        return None
    if suffix in WEIGHT_SCALES:
        return prefix + ".weight", WEIGHT_SCALES[suffix]
    if suffix in INPUT_SCALES:
        return prefix + ".weight", "input"
    return None


def fp8_layout(files) -> Fp8Layout:
    """Finds every FP8 tensor and its scale in the opened ``files`` (SafetensorsFile), reading and
    checking the (small) scale tensors. A scale whose weight is missing or not FP8, two scales for
    one weight, a scale of the wrong shape or dtype, or a scale that is not finite is a
    FileFormatError naming the file and tensor."""
    layout = Fp8Layout()
    infos = {name: (sf, info) for sf in files for name, info in sf.tensors.items()}
    for name, (sf, info) in infos.items():
        if info.dtype in FP8_DTYPES and _owner(name) is None:
            layout.scales[name] = None
    for name, (sf, info) in infos.items():
        owned = _owner(name)
        if owned is None:
            continue
        weight, kind = owned
        layout.owner[name] = weight
        if kind in ("marker", "input"):
            continue
        at = f"{sf.path}: tensor {name!r}"
        if weight not in infos:
            raise FileFormatError(f"{at}: an FP8 weight scale for {weight!r}, which the checkpoint does not hold")
        if weight not in layout.scales:
            raise FileFormatError(f"{at}: an FP8 weight scale for {weight!r}, which is "
                                  f"{infos[weight][1].dtype}, not F8_E4M3 or F8_E5M2")
        if layout.scales[weight] is not None:
            raise FileFormatError(f"{at}: {weight!r} already has the scale {layout.scales[weight].name!r}; "
                                  "one scale per weight")
        if info.dtype not in SCALE_DTYPES:
            raise FileFormatError(f"{at}: a scale must be a float tensor ({', '.join(SCALE_DTYPES)}); found {info.dtype}")
        shape = infos[weight][1].shape
        if info.numel == 1:
            scale_kind = "tensor"
        elif kind == "block":
            blocks = tuple(math.ceil(d / BLOCK) for d in shape)
            if len(shape) != 2 or tuple(info.shape) != blocks:
                raise FileFormatError(f"{at}: a 128 x 128 block scale of {weight!r} {list(shape)} must have shape "
                                      f"{list(blocks) if len(shape) == 2 else '[out/128, in/128] of a 2-D weight'}; "
                                      f"found {list(info.shape)}")
            scale_kind = "block"
        elif len(shape) >= 1 and tuple(info.shape) in ((shape[0],), (shape[0], 1)):
            scale_kind = "channel"
        else:
            raise FileFormatError(f"{at}: the scale of {weight!r} {list(shape)} must hold one value or one per "
                                  f"output channel ({shape[0] if shape else 1}); found shape {list(info.shape)}")
        values = np.array(sf.array(name), dtype=np.float32).reshape(info.shape if scale_kind == "block" else -1)
        if not np.all(np.isfinite(values)):
            raise FileFormatError(f"{at}: the scale of {weight!r} holds NaN or Inf")
        layout.scales[weight] = Fp8Scale(scale_kind, values, name)
    return layout
