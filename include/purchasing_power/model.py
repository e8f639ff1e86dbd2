"""Candidate models: purchase probability and expected 90-day spend, plus the baseline bundle.

Purchase (``p_purchase_30d``)
    Candidates ``hgb`` (histogram gradient boosting), ``logreg`` (L2 logistic regression on
    standardised features) and ``blend`` (the mean of their logits; the default,
    ``Settings.candidates``) are fitted on every training snapshot but the latest. The latest
    snapshot is the *calibration slice*: it chooses among the requested candidates (best PR-AUC,
    then ROC-AUC) and fits a Platt calibration of the chosen one (a logistic regression on its
    logit: monotone, so the ranking is unchanged). With ``smote`` the SMOTE variant of each
    candidate competes with the plain one: SMOTE is a step of an imbalanced-learn pipeline, so it
    resamples the fitting rows only -- the calibration slice, the gate's evaluation and scoring
    always see real rows -- and it is kept only where it wins on the calibration slice (its
    distorted probabilities are recalibrated there either way). At score time the calibration is
    refitted once more on the latest closed windows before the scored day (:func:`recalibrate_scored`,
    ``Settings.recalibration_windows``), so the probabilities follow the latest month's purchase
    rate; the pipelines, so the ranking, stay those the gate judged.

Spend (``expected_spend_90d``)
    A two-part model: P(any net spend in the next 90 days) (gradient-boosting classifier) times
    E[spend | spend > 0] (log-linear in the customer's past spend, with Duan's smearing
    correction). :class:`PastSpendModel` (past net spend times a fitted scale) is the plain
    baseline the gate can deploy instead.

Everything is seeded and single-threaded where it matters, so the same training table gives
byte-identical predictions.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable

from purchasing_power.pipelines import as_float64, fit_variants, hgb_classifier, preprocessor, signed_log1p  # noqa: F401  (bundles pickled before pipelines.py unpickle as_float64 and signed_log1p from here)
from purchasing_power.schemas import BASELINE_P, BASELINE_SPEND, HISTORY_DAYS, TEXT_PREFIXES

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

    from purchasing_power.storage import Storage

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("purchased", "spend")
META_COLUMNS = ("snapshot",)
#: Columns equal for every customer of a snapshot: not model features (trees would learn the
#: snapshot's identity); the spend level parts use them to scale totals to the horizon.
GLOBAL_COLUMNS = (HISTORY_DAYS,)
PAST_SPEND = "spend_total"
PURCHASE_CANDIDATES = ("hgb", "logreg", "blend")
#: Rows predicted at a time (:func:`by_rows`).
PREDICT_ROWS = 50_000
#: Features of the amount part of the two-part spend model (log1p of the positive part).
AMOUNT_FEATURES = ("spend_total", "spend_365d")
_EPS = 1e-6


def single_threaded(*, blas_only: bool = False) -> contextlib.AbstractContextManager:
    """BLAS and OpenMP limited to one thread: results never depend on the thread count, and on
    a small shared machine one thread is as fast as an oversubscribed pool (often faster).
    ``blas_only``: OpenMP keeps its threads (predictions: the trees' OpenMP loops run over rows,
    each row computed by one thread, so the bytes do not depend on how many there are)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas" if blas_only else None)


def _single_threaded_call(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_threaded():
            return fn(*args, **kwargs)

    return wrapper


class InsufficientData(ValueError):
    """Not enough closed training snapshots (or one class missing) to fit a model."""


def logit(p):
    import numpy as np

    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z):
    import numpy as np

    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def feature_columns(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, text) feature columns of a features/training frame (text: the embedding blocks,
    product and user text, ``schemas.TEXT_PREFIXES``)."""
    skip = set(LABEL_COLUMNS) | set(META_COLUMNS) | set(GLOBAL_COLUMNS) | {"customer_id"}
    text = [c for c in frame.columns if c.startswith(TEXT_PREFIXES)]
    num = [c for c in frame.columns if c not in skip and not c.startswith(TEXT_PREFIXES)]
    return num, text


@dataclass
class PlattCalibrator:
    """p = sigmoid(a * logit(raw) + b), fitted on the calibration slice."""

    a: float = 1.0
    b: float = 0.0

    @classmethod
    def fit(cls, raw, y) -> PlattCalibrator:
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        z = logit(raw).reshape(-1, 1)
        y = np.asarray(y)
        if len(np.unique(y)) < 2:
            return cls()
        lr = LogisticRegression(C=1e4, max_iter=1000).fit(z, y)
        return cls(a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))

    def predict(self, raw) -> np.ndarray:
        return sigmoid(self.a * logit(raw) + self.b)


@dataclass
class PurchaseModel:
    kind: str  # hgb | logreg | blend
    columns: list[str]
    pipelines: list[Any]  # one fitted pipeline, or two for the blend (mean of logits)
    calibrator: Any
    selection: dict[str, Any] = field(default_factory=dict)

    def raw_score(self, X: pd.DataFrame) -> np.ndarray:
        return by_rows(lambda part: _combine([p.predict_proba(part)[:, 1] for p in self.pipelines]), X, self.columns)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        import numpy as np

        return np.clip(self.calibrator.predict(self.raw_score(X)), 0.0, 1.0)


def by_rows(predict: Callable[[pd.DataFrame], np.ndarray], X: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """``predict`` over ``X``'s ``columns``, PREDICT_ROWS rows at a time: the pipelines' float64
    copies of the features (imputation, text blocks) then take one block's memory, not every
    customer's. Every step works row by row: a block size changes a prediction by float64
    rounding at most (BLAS may order a short block's sums differently); the same frame gives the
    same bytes."""
    import numpy as np

    if len(X) <= PREDICT_ROWS:
        return np.asarray(predict(X.reindex(columns=columns)), dtype=np.float64)
    return np.concatenate([predict(X.iloc[i:i + PREDICT_ROWS].reindex(columns=columns))
                           for i in range(0, len(X), PREDICT_ROWS)]).astype(np.float64, copy=False)


def _combine(probas: list[np.ndarray]) -> np.ndarray:
    import numpy as np

    if len(probas) == 1:
        return np.asarray(probas[0], dtype=np.float64)
    return sigmoid(np.mean([logit(p) for p in probas], axis=0))


@dataclass
class SpendModel:
    """Two-part expected spend: P(spend > 0) x E[spend | spend > 0]."""

    columns: list[str]
    buy: Any  # classifier pipeline: P(net spend > 0 within the horizon)
    amount_coef: list[float]  # log E[spend | spend > 0] = c0 + sum c_i * log1p(max(x_i, 0))
    smearing: float
    amount_features: tuple[str, ...] = AMOUNT_FEATURES
    info: dict[str, Any] = field(default_factory=dict)

    def amount(self, X: pd.DataFrame) -> np.ndarray:
        import numpy as np

        from purchasing_power.rowwise import row_products

        A = _amount_matrix(X, self.amount_features)
        c = np.asarray(self.amount_coef, dtype=np.float64)
        return np.exp(np.clip(c[0] + row_products(A, c[1:]), -50.0, 50.0)) * self.smearing

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        import numpy as np

        p = by_rows(lambda part: self.buy.predict_proba(part)[:, 1], X, self.columns)
        return np.clip(p * self.amount(X), 0.0, None)


@dataclass
class PastSpendModel:
    """Baseline "past spend": past net spend (floored at 0) per day of the source's history,
    times a scale fitted on a closed window. Dividing by the history length (the same for every
    customer) keeps the ranking of past spend and puts the level on the horizon's scale."""

    scale: float
    column: str = PAST_SPEND

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        import numpy as np

        past = np.clip(np.nan_to_num(X[self.column].to_numpy(dtype=np.float64)), 0.0, None)
        return past / _history_days(X) * self.scale


def fit_past_spend(frame: pd.DataFrame, y) -> PastSpendModel:
    """Scale so that predicted and actual totals agree on ``frame`` (features with outcomes ``y``)."""
    import numpy as np

    per_day = PastSpendModel(scale=1.0).predict(frame)
    total = float(per_day.sum())
    return PastSpendModel(scale=float(np.asarray(y, dtype=np.float64).sum() / total) if total > 0 else 0.0)


def _amount_matrix(X: pd.DataFrame, cols: tuple[str, ...]) -> np.ndarray:
    """log1p of the positive part of ``cols``, and log of the source's history length (past
    totals grow with it; 0 when the column is absent)."""
    import numpy as np

    A = np.log1p(np.clip(np.nan_to_num(X.reindex(columns=list(cols)).to_numpy(dtype=np.float64)), 0.0, None))
    return np.column_stack([A, np.log(_history_days(X))])


def _history_days(X: pd.DataFrame) -> np.ndarray:
    import numpy as np

    if HISTORY_DAYS not in X.columns:
        return np.ones(len(X))
    return np.clip(np.nan_to_num(X[HISTORY_DAYS].to_numpy(dtype=np.float64), nan=1.0), 1.0, None)


@dataclass
class ModelBundle:
    """What gets deployed: a purchase model and a spend model; ``None`` parts are the BG/NBD
    baseline (``bgnbd_p_purchase`` / ``bgnbd_gg_spend`` features)."""

    version: str
    kind: str  # "model" | "baseline"
    purchase: PurchaseModel | None = None
    spend: SpendModel | PastSpendModel | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(purchase probability, expected spend) of each row of ``features``."""
        raw, spend = self.scores(features)
        return self.probabilities(raw), spend

    def scores(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """What :meth:`predict` computes row by row before the purchase calibration: (the purchase
        model's raw score, or the baseline's probability; the expected spend, final). A shard of
        the customers at a time gives the same values (score_part tasks)."""
        return self.raw_scores(features), self.expected_spend(features)

    def raw_scores(self, features: pd.DataFrame) -> np.ndarray:
        """The first of :meth:`scores` alone (no spend predicted)."""
        import numpy as np

        if self.purchase is None:
            return features[BASELINE_P].to_numpy(dtype=np.float64)
        with single_threaded(blas_only=True):
            return self.purchase.raw_score(features)

    def expected_spend(self, features: pd.DataFrame) -> np.ndarray:
        """The second of :meth:`scores` alone (no purchase score computed)."""
        import numpy as np

        if self.spend is None:
            s = features[BASELINE_SPEND].to_numpy(dtype=np.float64)
        else:
            with single_threaded(blas_only=True):
                s = self.spend.predict(features)
        return np.nan_to_num(np.clip(s, 0.0, None))

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        """Purchase probabilities from :meth:`scores`' raw scores (the calibration applied)."""
        import numpy as np

        p = raw if self.purchase is None else np.clip(self.purchase.calibrator.predict(raw), 0.0, 1.0)
        return np.nan_to_num(np.clip(p, 0.0, 1.0))


def split_calibration(train: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Base rows = all snapshots but the latest; calibration rows = the latest snapshot."""
    snaps = sorted(train["snapshot"].unique())
    if len(snaps) < 2:
        raise InsufficientData(f"need at least 2 closed training snapshots, have {len(snaps)}")
    return train[train["snapshot"] < snaps[-1]], train[train["snapshot"] == snaps[-1]]


@_single_threaded_call
def fit_purchase_model(
    train: pd.DataFrame,
    *,
    seed: int,
    smote: bool = True,
    kinds: tuple[str, ...] = PURCHASE_CANDIDATES,
    columns: list[str] | None = None,
    smote_only: bool = False,
) -> PurchaseModel:
    """Fit the candidates on all snapshots but the latest, choose on the latest (the calibration
    slice) and Platt-calibrate the chosen one there. ``smote``: SMOTE variants compete with the
    plain ones (SMOTE resamples inside the fit only); ``smote_only`` (with ``smote``): only SMOTE
    variants (the ablation "with SMOTE"). ``columns`` restricts the features."""
    import numpy as np

    from purchasing_power.metrics import purchase_metrics
    from purchasing_power.rebalance import class_balance

    unknown = set(kinds) - set(PURCHASE_CANDIDATES)
    if unknown or not kinds:
        raise ValueError(f"unknown purchase candidates {sorted(unknown)}; expected some of {PURCHASE_CANDIDATES}")
    base_rows, cal_rows = split_calibration(train)
    num, text = feature_columns(train if columns is None else train[columns])
    cols = num + text
    y = base_rows["purchased"].to_numpy()
    y_cal = cal_rows["purchased"].to_numpy()
    balance = class_balance(y)
    minority = min(balance["positives"], balance["negatives"])
    if minority < 10:
        raise InsufficientData(f"too few rows of one class to fit: {balance}")
    if len(np.unique(y_cal)) < 2:
        raise InsufficientData("the calibration snapshot has a single class")
    pipes = sorted({"hgb", "logreg"} & set(kinds) | ({"hgb", "logreg"} if "blend" in kinds else set()))
    variants = ((True,) if smote_only else (False, True)) if smote else (False,)
    fitted, raw = fit_variants(base_rows, y, cal_rows, [(k, v) for v in variants for k in pipes], num=num, text=text,
                               seed=seed, minority=minority)
    for use_smote in variants:
        if "blend" in kinds:
            raw["blend", use_smote] = _combine([raw["hgb", use_smote], raw["logreg", use_smote]])
    scores = {key: purchase_metrics(y_cal, r) for key, r in raw.items() if key[0] in kinds}
    order = {key: i for i, key in enumerate(scores)}
    best = max(scores, key=lambda k: (round(_nan0(scores[k]["pr_auc"]), 12), round(_nan0(scores[k]["roc_auc"]), 12), -order[k]))
    kind, use_smote = best
    members = ["hgb", "logreg"] if kind == "blend" else [kind]
    calibrator = PlattCalibrator.fit(raw[best], y_cal)
    calibrated = calibrator.predict(raw[best])
    name = lambda k: f"{k[0]}{'+smote' if k[1] else ''}"  # noqa: E731
    selection = {
        "chosen": name(best),
        "smote_used": bool(use_smote),
        "smote_offered": bool(smote),
        "calibration": "platt",
        "calibration_snapshot": str(cal_rows["snapshot"].iloc[0]),
        "fit_rows": int(len(base_rows)),
        "calibration_rows": int(len(cal_rows)),
        "selection_metrics": {name(k): {m: s[m] for m in ("roc_auc", "pr_auc", "ece")} for k, s in scores.items()},
        "calibration_slice_ece": {"before": scores[best]["ece"], "after": purchase_metrics(y_cal, calibrated)["ece"]},
        "class_balance_before_smote": balance,
    }
    return PurchaseModel(kind=kind, columns=cols, pipelines=[fitted[m, use_smote] for m in members], calibrator=calibrator, selection=selection)


def recalibrate_scored(model: PurchaseModel, windows: list[tuple[str, Any, Any]]) -> tuple[PurchaseModel, dict[str, Any]]:
    """The model with its Platt calibration refitted on the latest closed windows.

    ``windows``: (as-of day, ``model.raw_score`` of the features as of that day, outcomes
    ``purchased``) of snapshots whose purchase horizon has closed, rows in the same order. The
    fitted pipelines (so the ranking) are unchanged; only the two calibration numbers move, so the
    probabilities track the purchase rate of the latest closed month instead of the one before
    the anchor's fit (up to two months older). Returns the model unchanged, with the reason, when
    the windows hold a single class."""
    import numpy as np

    raws = [np.asarray(r, dtype=np.float64) for _, r, _ in windows]
    raw = np.concatenate(raws) if raws else np.empty(0)
    y = np.concatenate([np.asarray(yw, dtype=np.int64) for _, _, yw in windows]) if windows else np.empty(0, dtype=np.int64)
    info: dict[str, Any] = {"snapshots": [d for d, _, _ in windows], "rows": int(len(y))}
    if len(np.unique(y)) < 2:
        return model, info | {"applied": False, "reason": "the recalibration windows hold a single class (or no rows)"}
    calibrator = PlattCalibrator.fit(raw, y)
    info |= {
        "applied": True,
        "purchase_rate": float(y.mean()),
        "mean_p_before": float(model.calibrator.predict(raw).mean()),
        "mean_p_after": float(calibrator.predict(raw).mean()),
        "platt": {"a": calibrator.a, "b": calibrator.b},
        "fit_platt": {"a": getattr(model.calibrator, "a", None), "b": getattr(model.calibrator, "b", None)},
    }
    return replace(model, calibrator=calibrator, selection=model.selection | {"recalibration": info}), info


@_single_threaded_call
def fit_spend_model(train: pd.DataFrame, *, seed: int, columns: list[str] | None = None) -> SpendModel:
    """Two-part spend model on the closed spend snapshots (see the module docstring)."""
    import numpy as np
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline

    num, text = feature_columns(train if columns is None else train[columns])
    y = train["spend"].to_numpy(dtype=np.float64)
    pos = y > 0
    if len(train) < 20 or pos.sum() < 10 or (~pos).sum() < 10:
        raise InsufficientData(f"too few spend training rows: {len(train)} rows, {int(pos.sum())} with spend")
    buy = Pipeline([("pre", preprocessor(num, text, seed, len(train))), ("clf", hgb_classifier(seed))])
    buy.fit(train[num + text], pos.astype(np.int64))
    A = _amount_matrix(train[pos], AMOUNT_FEATURES)
    reg = LinearRegression().fit(A, np.log(y[pos]))
    resid = np.log(y[pos]) - reg.predict(A)
    smearing = float(np.mean(np.exp(resid)))  # Duan's smearing estimate of E[exp(residual)]
    coef = [float(reg.intercept_)] + [float(c) for c in reg.coef_]
    info = {"rows": int(len(train)), "rows_with_spend": int(pos.sum()), "amount_coef": coef, "smearing": smearing}
    return SpendModel(columns=num + text, buy=buy, amount_coef=coef, smearing=smearing, info=info)


def _nan0(v: float) -> float:
    return -1.0 if v != v else v


def save_bundle(storage: Storage, bundle: ModelBundle, path: str) -> str:
    """Write ``bundle`` (pickled) atomically to ``path`` under ``storage``, then the sha256 of
    those bytes beside it (``<path>.sha256``): :func:`load_bundle` unpickles only bytes that
    match it, so a bundle replaced or altered after it was written is never run."""
    import hashlib
    import pickle

    from purchasing_power.storage import BUNDLE_HASH_SUFFIX

    data = pickle.dumps(bundle, protocol=5)
    storage.write_bytes(path, data)
    storage.write_bytes(path + BUNDLE_HASH_SUFFIX, hashlib.sha256(data).hexdigest().encode() + b"\n")
    return path


def load_bundle(path: str) -> ModelBundle:
    """Read a bundle written by :func:`save_bundle`; a ``ValueError`` naming the file, before
    anything is unpickled, when its bytes do not match the recorded sha256 (or none is
    recorded). Paths read from stored records go through ``Storage.resolve_inside`` first."""
    import hashlib
    import pickle

    from purchasing_power.storage import BUNDLE_HASH_SUFFIX, fresh_fs

    with fresh_fs(path).open(path, "rb") as fh:
        data = fh.read()
    sidecar = path + BUNDLE_HASH_SUFFIX
    try:
        with fresh_fs(sidecar).open(sidecar, "rb") as fh:
            recorded = fh.read().decode("ascii", "replace").strip()
    except FileNotFoundError:
        raise ValueError(
            f"model bundle {path} has no recorded sha256 ({sidecar} is missing): refusing to unpickle it; "
            f"refit its anchor (force_retrain) to write it with its hash"
        ) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != recorded:
        raise ValueError(
            f"model bundle {path} does not match the sha256 recorded when it was written "
            f"({actual} != {recorded} in {sidecar}): refusing to unpickle it"
        )
    return pickle.loads(data)  # noqa: S301 - bytes verified against the hash recorded at write time
