"""The estimators of the candidate models: preprocessing, classifiers, and the purchase
candidates' fits.

The purchase candidates of one training table (``hgb`` and ``logreg``, each plain and with SMOTE)
share their preprocessing: signed log1p, median imputation and the PCA of the text embeddings are
fitted once on the fitting rows (:func:`preprocessor`), and each candidate fits only what follows
(standardisation for ``logreg``, SMOTE, the classifier) on the preprocessed rows, side by side in
threads (:func:`fit_variants`). Each fit is single-threaded and seeded, so the fitted models do not
depend on how many run at once. The fitted candidate is an ordinary pipeline
(``pre`` -> [``scale``] -> [``smote``] -> ``clf``) whose ``pre`` step is the shared one.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from purchasing_power.schemas import TEXT_PREFIXES

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

#: PCA components kept of each text-embedding block.
TEXT_COMPONENTS = 8
#: At most this many candidate fits run at once (threads; fewer on a machine with fewer CPUs).
MAX_PARALLEL_FITS = 4


def import_estimators() -> None:
    """Import the estimator modules in the calling thread. Fits run in threads; two threads
    importing scikit-learn for the first time at once can meet its modules half-initialised
    (ImportError), so a caller imports them before it starts any."""
    import imblearn.over_sampling  # noqa: F401
    import imblearn.pipeline  # noqa: F401
    import sklearn.compose  # noqa: F401
    import sklearn.decomposition  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import sklearn.impute  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.pipeline  # noqa: F401
    import sklearn.preprocessing  # noqa: F401

    import purchasing_power.rowwise  # noqa: F401


def as_float64(x):
    import numpy as np

    return np.asarray(x, dtype=np.float64)


def float64_no_text_zero(x):
    """An embedding block as float64 (it is stored as float32) with a customer without text
    (missing values) at 0.0: one copy of the block."""
    import numpy as np

    out = np.array(x, dtype=np.float64)
    out[np.isnan(out)] = 0.0
    return out


def signed_log1p(x):
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.log1p(np.abs(x))


def preprocessor(num: list[str], text: list[str], seed: int, n_rows: int) -> Any:
    """signed log1p + median imputation of numeric columns; the mean text
    embedding of each block (product text, user text) reduced by PCA to at most TEXT_COMPONENTS
    components (the covariance eigendecomposition: one pass over the rows, exact, deterministic;
    projected row by row, :mod:`purchasing_power.rowwise`)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from purchasing_power.rowwise import RowPCA

    num_steps = [
        ("log", FunctionTransformer(signed_log1p, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
    ]
    parts = [("num", Pipeline(num_steps), num)]
    for prefix in TEXT_PREFIXES:
        block = [c for c in text if c.startswith(prefix)]
        if not block:
            continue
        k = max(1, min(TEXT_COMPONENTS, len(block), n_rows - 1))
        text_steps = [
            ("fill", FunctionTransformer(float64_no_text_zero, feature_names_out="one-to-one")),
            ("pca", RowPCA(n_components=k, random_state=seed, svd_solver=_pca_solver(n_rows, len(block)))),
        ]
        parts.append(("text" if prefix == TEXT_PREFIXES[0] else f"text_{prefix.rstrip('_')}", Pipeline(text_steps), block))
    return ColumnTransformer(parts, remainder="drop")


def _pca_solver(n_rows: int, n_columns: int) -> str:
    """``covariance_eigh`` where it is exact and fast (many more rows than columns: a d x d
    covariance instead of an SVD of every row), else the full SVD."""
    return "covariance_eigh" if n_rows >= 10 * n_columns else "full"


def hgb_classifier(seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    # small trees, slow learning rate, fixed number of rounds (no early-stopping split)
    return HistGradientBoostingClassifier(
        max_iter=300, learning_rate=0.03, max_leaf_nodes=7, min_samples_leaf=100, l2_regularization=1.0,
        early_stopping=False, random_state=seed,
    )


def candidate_steps(kind: str, *, seed: int, minority: int, smote: bool) -> list[tuple[str, Any]]:
    """What a purchase candidate fits after the shared preprocessing: [standardisation (logreg)],
    [SMOTE], the classifier (``kind`` in ``hgb``/``logreg``; the ``blend`` is built from the two
    fitted candidates)."""
    from sklearn.preprocessing import StandardScaler

    from purchasing_power.rebalance import make_smote
    from purchasing_power.rowwise import RowLogisticRegression

    if kind == "hgb":
        steps: list[tuple[str, Any]] = [("clf", hgb_classifier(seed))]
    elif kind == "logreg":
        steps = [("scale", StandardScaler()), ("clf", RowLogisticRegression(C=0.01, max_iter=3000))]
    else:
        raise ValueError(f"unknown purchase pipeline {kind!r}; expected hgb or logreg")
    if smote:
        steps.insert(len(steps) - 1, ("smote", make_smote(seed, minority)))
    return steps


def fit_variants(
    X: pd.DataFrame, y: np.ndarray, X_cal: pd.DataFrame, variants: list[tuple[str, bool]], *, num: list[str],
    text: list[str], seed: int, minority: int, workers: int | None = None,
) -> tuple[dict[tuple[str, bool], Any], dict[tuple[str, bool], np.ndarray]]:
    """Fit the purchase candidates ``variants`` ((kind, with SMOTE)) on ``X``/``y`` with one shared
    preprocessing, in up to ``workers`` threads (default: the CPUs, at most MAX_PARALLEL_FITS).
    Returns the fitted pipelines and their scores on the calibration rows ``X_cal``. The caller
    holds BLAS to one thread (``model.single_threaded``: BLAS's count is process-wide); each
    fitting thread sets its own OpenMP count to one."""
    from imblearn.pipeline import Pipeline

    import_estimators()
    pre = preprocessor(num, text, seed, len(X))
    Xt = pre.fit_transform(X[num + text])
    Xt_cal = pre.transform(X_cal[num + text])

    def fit_one(variant: tuple[str, bool]) -> tuple[Any, np.ndarray]:
        from threadpoolctl import threadpool_limits

        kind, use_smote = variant
        # OpenMP's thread count is per thread: a new thread starts at the machine's default
        with threadpool_limits(limits=1, user_api="openmp"):
            rest = Pipeline(candidate_steps(kind, seed=seed, minority=minority, smote=use_smote)).fit(Xt, y)
            return Pipeline([("pre", pre), *rest.steps]), rest.predict_proba(Xt_cal)[:, 1]

    n = max(1, min(workers or os.cpu_count() or 1, MAX_PARALLEL_FITS, len(variants)))
    with ThreadPoolExecutor(max_workers=n) as pool:
        done = list(pool.map(fit_one, variants))
    return {v: d[0] for v, d in zip(variants, done)}, {v: d[1] for v, d in zip(variants, done)}
