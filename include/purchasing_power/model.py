"""Candidate models: purchase probability (SMOTE inside the pipeline, calibrated on a later slice)
and expected 90-day spend (Poisson-loss gradient boosting), plus the BG/NBD fallback bundle.

Everything here is seeded and deterministic: the same training table gives the same model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from purchasing_power.features import TEXT_PREFIX

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("purchased", "spend")
META_COLUMNS = ("snapshot",)
BASELINE_P = "bgnbd_p_purchase"
BASELINE_SPEND = "bgnbd_gg_spend"
PURCHASE_CANDIDATES = ("hgb", "logreg")


class InsufficientData(ValueError):
    """Not enough closed training snapshots (or one class missing) to fit a model."""


def signed_log1p(x):
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.log1p(np.abs(x))


def feature_columns(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, text) feature columns of a features/training frame."""
    skip = set(LABEL_COLUMNS) | set(META_COLUMNS)
    text = [c for c in frame.columns if c.startswith(TEXT_PREFIX)]
    num = [c for c in frame.columns if c not in skip and not c.startswith(TEXT_PREFIX)]
    return num, text


def _preprocessor(num: list[str], text: list[str], seed: int, n_rows: int, scale: bool) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    num_steps = [
        ("log", FunctionTransformer(signed_log1p, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
    ]
    if scale:
        num_steps.append(("scale", StandardScaler()))
    parts = [("num", Pipeline(num_steps), num)]
    if text:
        k = max(1, min(8, len(text), n_rows - 1))
        parts.append(
            (
                "text",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value=0.0, keep_empty_features=True)),
                        ("pca", PCA(n_components=k, random_state=seed, svd_solver="full")),
                    ]
                ),
                text,
            )
        )
    return ColumnTransformer(parts, remainder="drop")


def make_purchase_pipeline(kind: str, num: list[str], text: list[str], *, seed: int, n_rows: int, minority: int, smote: bool = True) -> Any:
    from imblearn.pipeline import Pipeline
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    from purchasing_power.rebalance import make_smote

    if kind == "hgb":
        clf = HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=50, l2_regularization=1.0, random_state=seed
        )
    elif kind == "logreg":
        clf = LogisticRegression(C=0.5, max_iter=2000)
    else:
        raise ValueError(f"unknown purchase candidate {kind!r}; expected one of {PURCHASE_CANDIDATES}")
    steps: list[tuple[str, Any]] = [("pre", _preprocessor(num, text, seed, n_rows, scale=kind == "logreg"))]
    if smote:
        steps.append(("smote", make_smote(seed, minority)))
    steps.append(("clf", clf))
    return Pipeline(steps)


@dataclass
class PurchaseModel:
    kind: str
    columns: list[str]
    base: Any
    calibrator: Any
    selection: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        import numpy as np

        raw = self.base.predict_proba(X.reindex(columns=self.columns))[:, 1]
        return np.clip(self.calibrator.predict(raw), 0.0, 1.0)


@dataclass
class SpendModel:
    columns: list[str]
    model: Any

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        import numpy as np

        return np.clip(self.model.predict(X.reindex(columns=self.columns)), 0.0, None)


@dataclass
class ModelBundle:
    """What gets deployed: a purchase model and a spend model, or the BG/NBD baseline."""

    version: str
    kind: str  # "model" | "baseline"
    purchase: PurchaseModel | None = None
    spend: SpendModel | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        if self.purchase is not None:
            p = self.purchase.predict_proba(features)
        else:
            p = features[BASELINE_P].to_numpy(dtype=np.float64)
        if self.spend is not None:
            s = self.spend.predict(features)
        else:
            s = features[BASELINE_SPEND].to_numpy(dtype=np.float64)
        return np.nan_to_num(np.clip(p, 0.0, 1.0)), np.nan_to_num(np.clip(s, 0.0, None))


def split_calibration(train: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Base rows = all snapshots but the latest; calibration rows = the latest snapshot."""
    snaps = sorted(train["snapshot"].unique())
    if len(snaps) < 2:
        raise InsufficientData(f"need at least 2 closed training snapshots, have {len(snaps)}")
    return train[train["snapshot"] < snaps[-1]], train[train["snapshot"] == snaps[-1]]


def fit_purchase_model(train: pd.DataFrame, *, seed: int, smote: bool = True, kinds: tuple[str, ...] = PURCHASE_CANDIDATES) -> PurchaseModel:
    """Fit each candidate on all snapshots but the latest (SMOTE inside the fit), choose the one
    with the best PR-AUC on the latest snapshot, and calibrate it there (isotonic)."""
    from sklearn.isotonic import IsotonicRegression

    from purchasing_power.evaluate import purchase_metrics
    from purchasing_power.rebalance import class_balance

    base_rows, cal_rows = split_calibration(train)
    num, text = feature_columns(train)
    cols = num + text
    y = base_rows["purchased"].to_numpy()
    balance = class_balance(y)
    if min(balance["positives"], balance["negatives"]) < 10:
        raise InsufficientData(f"too few rows of one class to fit: {balance}")
    minority = min(balance["positives"], balance["negatives"])
    scores: dict[str, dict[str, float]] = {}
    fitted: dict[str, Any] = {}
    for kind in kinds:
        pipe = make_purchase_pipeline(kind, num, text, seed=seed, n_rows=len(base_rows), minority=minority, smote=smote)
        pipe.fit(base_rows[cols], y)
        raw = pipe.predict_proba(cal_rows[cols])[:, 1]
        scores[kind] = purchase_metrics(cal_rows["purchased"].to_numpy(), raw)
        fitted[kind] = (pipe, raw)
    best = max(kinds, key=lambda k: (_nan0(scores[k]["pr_auc"]), _nan0(scores[k]["roc_auc"]), -kinds.index(k)))
    pipe, raw = fitted[best]
    calibrator = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, cal_rows["purchased"].to_numpy())
    selection = {
        "chosen": best,
        "calibration_snapshot": str(cal_rows["snapshot"].iloc[0]),
        "selection_metrics": {k: {m: v for m, v in s.items() if m in ("roc_auc", "pr_auc")} for k, s in scores.items()},
        "class_balance_before_smote": balance,
        "smote": smote,
    }
    return PurchaseModel(kind=best, columns=cols, base=pipe, calibrator=calibrator, selection=selection)


def fit_spend_model(train: pd.DataFrame, *, seed: int) -> SpendModel:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    num, text = feature_columns(train)
    y = train["spend"].to_numpy()
    if len(train) < 20 or (y > 0).sum() < 10:
        raise InsufficientData(f"too few spend training rows: {len(train)} rows, {(y > 0).sum()} with spend")
    pipe = Pipeline(
        [
            ("pre", _preprocessor(num, text, seed, len(train), scale=False)),
            (
                "reg",
                HistGradientBoostingRegressor(
                    loss="poisson", max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=50, l2_regularization=1.0, random_state=seed
                ),
            ),
        ]
    )
    pipe.fit(train[num + text], y)
    return SpendModel(columns=num + text, model=pipe)


def _nan0(v: float) -> float:
    return -1.0 if v != v else v
