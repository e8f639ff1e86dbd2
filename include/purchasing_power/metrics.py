"""Metrics for purchase probabilities and spend predictions (used by the gate and the benchmarks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


def _arrays(y, p):
    import numpy as np

    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y and predictions must be 1-d of equal length, got {y.shape} and {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("predictions contain NaN or infinite values")
    return y, p


def lift_at(y, p, share: float = 0.1) -> float:
    """Purchase rate among the top ``share`` by score, divided by the overall rate."""
    import numpy as np

    y, p = _arrays(y, p)
    if y.mean() == 0:
        return float("nan")
    k = max(1, int(round(share * len(y))))
    order = np.lexsort((np.arange(len(p)), -p))  # stable: ties by position
    return float(y[order[:k]].mean() / y.mean())


def expected_calibration_error(y, p, bins: int = 10) -> float:
    """ECE with equal-width probability bins, weighted by bin size."""
    import numpy as np

    y, p = _arrays(y, p)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def purchase_metrics(y, p, *, probabilities: bool = True) -> dict[str, float]:
    """Ranking metrics always; Brier and ECE only when ``p`` are probabilities (not a score)."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    y, p = _arrays(y, p)
    both = 0 < y.sum() < len(y)
    out = {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "lift_at_10pct": lift_at(y, p, 0.1),
        "base_rate": float(y.mean()),
        "n": int(len(y)),
    }
    if probabilities:
        out["brier"] = float(brier_score_loss(y, p))
        out["ece"] = expected_calibration_error(y, p)
    return out


def normalized_gini(y, pred) -> float:
    """Gini of the ranking by ``pred`` divided by the Gini of the perfect ranking (ZILN paper)."""
    import numpy as np

    y, pred = _arrays(y, pred)

    def gini(order_by: np.ndarray) -> float:
        order = np.lexsort((np.arange(len(order_by)), -order_by))
        cum = np.cumsum(y[order]) / max(y.sum(), 1e-12)
        n = len(y)
        return float(cum.sum() / n - (n + 1) / (2 * n))

    perfect = gini(y)
    return float(gini(pred) / perfect) if perfect > 0 else float("nan")


def spend_metrics(y, pred) -> dict[str, float]:
    import numpy as np
    from scipy.stats import spearmanr

    y, pred = _arrays(y, pred)
    rho = spearmanr(y, pred).statistic if np.ptp(pred) > 0 and np.ptp(y) > 0 else float("nan")
    return {
        "normalized_gini": normalized_gini(y, pred),
        "spearman": float(rho),
        "decile_mape": decile_mape(y, pred),
        "mean_actual": float(y.mean()),
        "mean_predicted": float(pred.mean()),
        "n": int(len(y)),
    }


def decile_mape(y, pred) -> float:
    """Mean absolute percentage error of per-decile totals, deciles by prediction (ZILN paper)."""
    import numpy as np

    y, pred = _arrays(y, pred)
    order = np.lexsort((np.arange(len(pred)), -pred))
    errs = []
    for chunk in np.array_split(order, 10):
        if len(chunk) and y[chunk].sum() > 0:
            errs.append(abs(pred[chunk].sum() - y[chunk].sum()) / y[chunk].sum())
    return float(np.mean(errs)) if errs else float("nan")


def finite_or_none(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe: NaN becomes None."""
    import math

    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


# -- bootstrap confidence intervals ------------------------------------------------------------
PURCHASE_BOOT_METRICS = ("roc_auc", "pr_auc", "lift_at_10pct", "brier", "ece")
SPEND_BOOT_METRICS = ("normalized_gini", "spearman", "decile_mape")


def bootstrap_indices(n: int, resamples: int, seed: int):
    """``resamples`` x ``n`` row indices drawn with replacement (seeded). Use the same indices for
    every contender on one data set: the intervals of their differences are then paired."""
    import numpy as np

    if n < 1 or resamples < 1:
        raise ValueError("need n >= 1 and resamples >= 1")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def ranking_metrics(y, p) -> tuple[float, float]:
    """(ROC-AUC, average precision) from one sort, ties handled as scikit-learn does (tied
    scores form one threshold; a tied positive/negative pair counts one half in ROC-AUC).
    Equal to ``roc_auc_score``/``average_precision_score`` at a fraction of their cost, for
    bootstrapping."""
    import numpy as np

    y, p = _arrays(y, p)
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan"), float("nan")
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    last = np.r_[np.nonzero(np.diff(ps))[0], len(ps) - 1]  # the last row of every tie group
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    d_tp = np.diff(np.r_[0.0, tp])
    d_fp = np.diff(np.r_[0.0, fp])
    roc = float(np.sum(d_fp * (tp - d_tp) + 0.5 * d_fp * d_tp) / (n_pos * n_neg))
    ap = float(np.sum(d_tp / n_pos * tp / (tp + fp)))
    return roc, ap


def purchase_point_metrics(y, p, *, probabilities: bool = True) -> dict[str, float]:
    """The benchmark's purchase metrics: ROC-AUC, PR-AUC, lift at the top 10 %, and (for
    probabilities) Brier and ECE (the same values as :func:`purchase_metrics`, faster)."""
    import numpy as np

    y, p = _arrays(y, p)
    roc, ap = ranking_metrics(y, p)
    out = {"roc_auc": roc, "pr_auc": ap, "lift_at_10pct": lift_at(y, p, 0.1)}
    if probabilities:
        out["brier"] = float(np.mean((p - y) ** 2))
        out["ece"] = expected_calibration_error(y, p)
    return out


def spend_point_metrics(y, pred) -> dict[str, float]:
    m = spend_metrics(y, pred)
    return {k: m[k] for k in SPEND_BOOT_METRICS}


def bootstrap_metrics(fn, y, pred, idx) -> dict[str, Any]:
    """``fn(y, pred)`` (a dict of metrics) on the full data and on every resample ``idx`` (from
    :func:`bootstrap_indices`). Returns {metric: {"value", "resamples": array}}."""
    import numpy as np

    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    point = fn(y, pred)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for rows in idx:
        m = fn(y[rows], pred[rows])
        for k in draws:
            draws[k].append(m.get(k, float("nan")))
    return {k: {"value": point[k], "resamples": np.asarray(v, dtype=np.float64)} for k, v in draws.items()}


def interval(values, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap values (NaN resamples ignored)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan"), float("nan")
    lo = (1.0 - level) / 2.0
    return float(np.quantile(v, lo)), float(np.quantile(v, 1.0 - lo))
