"""The models' linear steps score each row alone: a row's result is the same bits whatever rows
are predicted with it (what lets customer shards score apart and agree with one pass)."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from purchasing_power.rowwise import RowLogisticRegression, RowPCA, row_products


def _subsets(n: int, rng: np.random.Generator, trials: int = 40) -> list[np.ndarray]:
    return [np.sort(rng.permutation(n)[: rng.integers(1, n // 3)]) for _ in range(trials)]


def test_row_products_do_not_depend_on_the_other_rows():
    rng = np.random.default_rng(0)
    X, W, w = rng.random((3000, 40)), rng.random((9, 40)), rng.random(40)
    full_m, full_v = row_products(X, W), row_products(X, w)
    np.testing.assert_allclose(full_m, X @ W.T, rtol=1e-12)
    np.testing.assert_allclose(full_v, X @ w, rtol=1e-12)
    for rows in _subsets(len(X), rng):
        assert np.array_equal(row_products(X[rows], W), full_m[rows])
        assert np.array_equal(row_products(X[rows], w), full_v[rows])


def test_row_estimators_fit_as_scikit_learns_and_predict_row_by_row():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 30))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=2000) > 0).astype(int)
    pca, ref_pca = RowPCA(n_components=5, random_state=0).fit(X), PCA(n_components=5, random_state=0).fit(X)
    np.testing.assert_array_equal(pca.components_, ref_pca.components_)
    np.testing.assert_allclose(pca.transform(X), ref_pca.transform(X), rtol=1e-9, atol=1e-12)
    lr, ref_lr = RowLogisticRegression(C=0.1).fit(X, y), LogisticRegression(C=0.1).fit(X, y)
    np.testing.assert_array_equal(lr.coef_, ref_lr.coef_)
    p = lr.predict_proba(X)[:, 1]
    np.testing.assert_allclose(p, ref_lr.predict_proba(X)[:, 1], rtol=1e-12)
    t = pca.transform(X)
    for rows in _subsets(len(X), rng):
        assert np.array_equal(pca.transform(X[rows]), t[rows])
        assert np.array_equal(lr.predict_proba(X[rows])[:, 1], p[rows])
