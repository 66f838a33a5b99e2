"""Smoothness of quantization parameters between neighbouring groups ("Markov" metrics).

The compiled core computes, per tensor and right after quantizing it, for each pair of
neighbouring groups i, i+1 in a row:

- scale_jump = |s(i+1) - s(i)| / |s(i)| (0 if both scales are 0, 1 if only s(i) is);
- zero_point_jump = |z(i+1) - z(i)| / (2^b - 1);
- boundary score = 1 - min(1, (scale_jump + zero_point_jump) / 2);

and here they become: smoothness_score = 1 - min(1, sum(scale_jump + zero_point_jump) /
(2 * boundaries)) (1.0 with fewer than two groups per row); a violation is a scale jump above the
threshold (default 0.3), severity "high" above 0.5, else "medium"; is_valid when there is none.

What they mean: how much the group parameters change along a row, a cheap signal of outliers
or structure that group-wise quantization cuts through (a group holding one large weight has a
much larger scale than its neighbours). What they do not mean: they say nothing about the
quantization error itself (a layer can be perfectly smooth and badly quantized, or jumpy and
accurate); use cosine / RMSE / SQNR (validate_quality) for that. Symmetric groups have constant
zero points, so only scales contribute there.
"""

from __future__ import annotations

from typing import Any, Iterable

DEFAULT_THRESHOLD = 0.3


def layer_metrics(raw: tuple) -> dict[str, Any]:
    boundaries, jump_sum, score_sum, max_jump, high, medium, violations = raw
    return {
        "boundaries": boundaries,
        "smoothness_score": 1.0 - min(1.0, jump_sum / (2 * boundaries)) if boundaries else 1.0,
        "mean_boundary_score": score_sum / boundaries if boundaries else 1.0,
        "max_scale_jump": max_jump,
        "violation_count": high + medium,
        "high": high,
        "medium": medium,
        "is_valid": high + medium == 0,
        "violations": [{"row": r, "group": g, "scale_jump": j, "severity": "high" if h else "medium"}
                       for r, g, j, h in violations],
        "_jump_sum": jump_sum,
        "_score_sum": score_sum,
    }


def summarize(layers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{'layers': {name: metrics}, 'overall': metrics over every boundary of every layer}."""
    boundaries = sum(m["boundaries"] for m in layers.values())
    jump_sum = sum(m["_jump_sum"] for m in layers.values())
    score_sum = sum(m["_score_sum"] for m in layers.values())
    high = sum(m["high"] for m in layers.values())
    medium = sum(m["medium"] for m in layers.values())
    overall = {
        "layers": len(layers),
        "boundaries": boundaries,
        "smoothness_score": 1.0 - min(1.0, jump_sum / (2 * boundaries)) if boundaries else 1.0,
        "mean_boundary_score": score_sum / boundaries if boundaries else 1.0,
        "max_scale_jump": max((m["max_scale_jump"] for m in layers.values()), default=0.0),
        "violation_count": high + medium,
        "high": high,
        "medium": medium,
        "is_valid": high + medium == 0,
    }
    public = {name: {k: v for k, v in m.items() if not k.startswith("_")} for name, m in layers.items()}
    return {"layers": public, "overall": overall}


def from_raw(names: Iterable[Any], raws: Iterable[tuple]) -> dict[str, dict[str, Any]]:
    """names: strings, or an Arrow string array / chunked array."""
    if hasattr(names, "to_pylist"):
        names = names.to_pylist()
    return {name: layer_metrics(raw) for name, raw in zip(names, raws)}
