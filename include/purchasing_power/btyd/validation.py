"""Input validation shared by the BG/NBD and Gamma-Gamma models: customer arrays as 1-D floats,
checked for shape, finiteness, sign and integrality before any likelihood is evaluated."""

from __future__ import annotations

from typing import Any

import numpy as np

ArrayLike = Any  # numpy array, pandas Series, list or scalar


def _as_1d(name: str, values: ArrayLike) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype="float64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _check_counts(frequency: np.ndarray, *named: tuple[str, np.ndarray]) -> None:
    """Every named array finite and non-negative, then ``frequency`` integer-valued: the checks
    the BG/NBD and Gamma-Gamma inputs share, in the order they are reported."""
    for name, arr in named:
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite (no NaN/inf)")
        if np.any(arr < 0):
            raise ValueError(f"{name} must be non-negative")
    if np.any(frequency != np.round(frequency)):
        raise ValueError("frequency must be integer-valued (number of repeat purchases)")


def validate_rft(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate BG/NBD inputs (x, t_x, T) and return float arrays."""
    x = _as_1d("frequency", frequency)
    tx = _as_1d("recency", recency)
    T_ = _as_1d("T", T)
    if not (x.shape == tx.shape == T_.shape):
        raise ValueError(
            f"frequency, recency and T must have the same length, got {x.size}, {tx.size}, {T_.size}"
        )
    _check_counts(x, ("frequency", x), ("recency", tx), ("T", T_))
    if np.any(tx > T_):
        raise ValueError("recency must be <= T for every customer")
    if np.any((x > 0) & (tx <= 0)):
        raise ValueError("customers with frequency > 0 must have recency > 0")
    return x, tx, T_


def validate_t(t: ArrayLike) -> np.ndarray:
    arr = np.asarray(t, dtype="float64")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("t (the prediction horizon) must be finite and >= 0")
    return arr


def check_positive_params(**params: float) -> None:
    for k, v in params.items():
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"model parameter {k} must be a positive finite number, got {v!r}")


def validate_weights(weights: ArrayLike, n: int) -> np.ndarray:
    w = _as_1d("weights", weights)
    if w.size != n:
        raise ValueError(f"weights must have the same length as the data ({n}), got {w.size}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    if w.sum() <= 0:
        raise ValueError("weights must not all be zero")
    return w


def validate_fm(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = _as_1d("frequency", frequency)
    mv = _as_1d("monetary_value", monetary_value)
    if x.shape != mv.shape:
        raise ValueError(f"frequency and monetary_value must have the same length, got {x.size}, {mv.size}")
    _check_counts(x, ("frequency", x), ("monetary_value", mv))
    return x, mv
