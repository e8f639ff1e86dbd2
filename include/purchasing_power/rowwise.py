"""Estimators whose predictions compute each row alone, so that a customer's score does not
depend on which other customers are predicted with it.

BLAS matrix products round a row's sums differently with the number of rows in the call (the
kernels handle a block's last rows apart), so the same customer scored among a shard's customers
or among all of them could differ in the last bit. The linear steps of the models' predictions
(the text blocks' PCA projection, the logistic regression's decision function) use these
subclasses instead: ``numpy.einsum`` sums each row's products in the same order whatever the
rows around it. Fitting is scikit-learn's own, unchanged. Importing this module imports
scikit-learn: the pipelines import it when they build estimators.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted


def row_products(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``X @ W.T`` (``W``: one weight vector per row, or one vector), each row of the result
    computed from that row of ``X`` only."""
    X = np.asarray(X, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    return np.einsum("ij,j->i", X, W) if W.ndim == 1 else np.einsum("ij,kj->ik", X, W)


class RowPCA(PCA):
    """PCA whose ``transform`` projects each row alone (:func:`row_products`)."""

    def transform(self, X):  # type: ignore[override]
        check_is_fitted(self)
        out = row_products(np.asarray(X, dtype=np.float64) - self.mean_, self.components_)
        if self.whiten:
            out /= np.sqrt(self.explained_variance_)
        return out


class RowLogisticRegression(LogisticRegression):
    """Logistic regression whose decision function scores each row alone (:func:`row_products`);
    ``predict_proba`` goes through it."""

    def decision_function(self, X):  # type: ignore[override]
        check_is_fitted(self)
        scores = row_products(X, self.coef_) + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores
