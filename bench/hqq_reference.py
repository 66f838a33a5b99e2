"""A numpy re-implementation of HQQ's proximal zero-point solver (half-quadratic quantization),
as a reference point for bench/quality.py only. Same group layout as arrowquant's asymmetric
format; HQQ's defaults: lp norm 0.7, beta 10, kappa 1.01, 20 iterations, early stop on the
mean absolute error."""

from __future__ import annotations

import numpy as np


def shrink_lp(x: np.ndarray, beta: float, p: float) -> np.ndarray:
    """Proximal operator of the lp norm (p < 1), as HQQ defines it."""
    ax = np.abs(x)
    with np.errstate(divide="ignore"):
        return np.sign(x) * np.maximum(ax - (1.0 / beta) * np.power(np.maximum(ax, 1e-30), p - 1), 0.0)


def quantize_hqq(w: np.ndarray, bits: int, group_size: int, lp_norm: float = 0.7, beta: float = 10.0,
                 kappa: float = 1.01, iters: int = 20) -> np.ndarray:
    """Returns the dequantized weights."""
    g = w.reshape(-1, group_size).astype(np.float32)
    qmax = float(2 ** bits - 1)
    lo, hi = g.min(axis=1, keepdims=True), g.max(axis=1, keepdims=True)
    inverse = qmax / np.maximum(hi - lo, 1e-12)   # HQQ's "scale" multiplies
    zero = -lo * inverse
    best = np.inf
    for _ in range(iters):
        q = np.clip(np.round(g * inverse + zero), 0, qmax)
        r = (q - zero) / inverse
        e = shrink_lp(g - r, beta, lp_norm)
        zero = np.mean(q - (g - e) * inverse, axis=1, keepdims=True)
        beta *= kappa
        err = float(np.abs(g - r).mean())
        if err < best:
            best = err
        else:
            break
    q = np.clip(np.round(g * inverse + zero), 0, qmax)
    return ((q - zero) / inverse).reshape(w.shape)
