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
