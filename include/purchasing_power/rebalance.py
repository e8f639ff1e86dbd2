"""SMOTE rebalancing — applied to training data only, inside the fit.

The sampler is a step of an imbalanced-learn ``Pipeline``: imbalanced-learn calls ``fit_resample``
only while fitting, so scoring, calibration and evaluation always see real rows. The model fit
(``model.fit_purchase_model``) lets each SMOTE variant compete with its plain twin on the
held-out calibration snapshot and recalibrates whichever wins there, so SMOTE stays only where it
earns its place (on the UCI Online Retail anchors it never did: see bench/results/quality.md).
"""

from __future__ import annotations

from typing import Any


def make_smote(seed: int, minority_count: int) -> Any:
    """A seeded SMOTE whose neighbour count fits the minority class.

    Raises ValueError when there are too few minority rows to interpolate between."""
    from imblearn.over_sampling import SMOTE

    if minority_count < 2:
        raise ValueError(f"SMOTE needs at least 2 minority-class rows, got {minority_count}")
    return SMOTE(random_state=seed, k_neighbors=min(5, minority_count - 1))


def class_balance(y) -> dict[str, float]:
    import numpy as np

    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError("labels must be a non-empty 1-d array")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"labels must be 0/1, got {sorted(values)}")
    pos = int((y == 1).sum())
    return {"n": int(len(y)), "positives": pos, "negatives": int(len(y) - pos), "positive_rate": pos / len(y)}
