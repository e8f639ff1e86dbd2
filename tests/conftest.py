"""Shared fixtures for the unit tests: a tiny raw frame with every kind of bad row, and a factory
of Settings whose storage and source live under the test's tmp_path."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# model revisions remembered between processes: keep the tests' away from the user's cache
os.environ.setdefault("PURCHASING_POWER_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"pp-test-cache-{os.getpid()}"))

INCLUDE = str(Path(__file__).resolve().parents[1] / "include")
if INCLUDE not in sys.path:
    sys.path.insert(0, INCLUDE)
# the development tools (metadb, localairflow, airflow_rest) are top-level modules in tools/
TOOLS = str(Path(__file__).resolve().parents[1] / "tools")
if TOOLS not in sys.path:
    sys.path.append(TOOLS)

import pandas as pd  # noqa: E402

from purchasing_power.schemas import CANONICAL_COLUMNS  # noqa: E402
from purchasing_power.settings import Settings  # noqa: E402

#: The tiny raw frame's rows (InvoiceDate as text, as a CSV or a sloppy Parquet source has it)
#: and, per row, what clean must do with it.
TINY_ROWS = [
    # InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country
    ("536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 6, "2011-08-30 08:26:00", 2.55, 17850.0, "United Kingdom"),
    ("536365", "71053", "  white   metal\tlantern ", 6, "2011-08-30 08:26:00", 3.39, 17850.0, "United Kingdom"),
    ("C536379", "71053", "WHITE METAL LANTERN", -2, "2011-08-31 09:41:00", 3.39, 17850.0, "United Kingdom"),
    ("536380", "22728", "ALARM CLOCK BAKELIKE PINK", 4, "2011-08-31 10:00:00", 3.75, None, "United Kingdom"),
    ("536381", "22729", "FREE GIFT", 1, "2011-08-31 10:05:00", 0.0, 13047.0, "France"),
    ("536382", "22730", "ALARM CLOCK BAKELIKE IVORY", 2, "not a date", 3.75, 13047.0, "France"),
    ("536383", "84029G", "KNITTED UNION FLAG HOT WATER BOTTLE", 3, "2011-08-31 11:00:00", 3.39, 13047.0, "France"),
    ("536383", "84029G", "KNITTED UNION FLAG HOT WATER BOTTLE", 3, "2011-08-31 11:00:00", 3.39, 13047.0, "France"),
]

#: Expected fate of each TINY_ROWS row: None = clean, otherwise the quarantine reason.
TINY_EXPECTED_REASONS = [
    None,
    None,
    None,  # cancellation: kept, negative line value
    "missing_customer",
    "non_positive_price",
    "unparseable_date",
    None,
    "duplicate_line",
]


def make_raw(rows: list[tuple]) -> pd.DataFrame:
    """A source-like frame in the canonical schema from row tuples."""
    df = pd.DataFrame(rows, columns=list(CANONICAL_COLUMNS))
    df["Quantity"] = df["Quantity"].astype("int64")
    df["UnitPrice"] = df["UnitPrice"].astype("float64")
    df["CustomerID"] = df["CustomerID"].astype("float64")
    return df


@pytest.fixture
def tiny_raw() -> pd.DataFrame:
    """Eight source rows: 4 good (one of them a cancellation), a missing CustomerID, a zero price,
    an unparseable date and an exact duplicate line."""
    return make_raw(TINY_ROWS)


@pytest.fixture
def tiny_expected_reasons() -> list[str | None]:
    """Per ``tiny_raw`` row: None (clean) or its quarantine reason."""
    return list(TINY_EXPECTED_REASONS)


@pytest.fixture(name="make_raw")
def make_raw_fixture() -> Callable[[list[tuple]], pd.DataFrame]:
    """``make_raw(rows)``: a source-like canonical frame from row tuples."""
    return make_raw


@pytest.fixture
def as_raw_partition() -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Turn a source-like frame into what a raw partition holds (parsed dates, *_raw columns),
    i.e. the input of ``clean_frame``."""
    from purchasing_power.extract import normalise_raw_dtypes

    return normalise_raw_dtypes


@pytest.fixture
def settings_factory(tmp_path, tiny_raw) -> Callable[..., Settings]:
    """``make(frame=None, name="transactions.parquet", **overrides)``: write ``frame`` (default:
    ``tiny_raw``) to a source under tmp_path (CSV when ``name`` ends with ``.csv``, else Parquet)
    and return Settings with ``storage=tmp_path/'data'`` and ``source`` pointing at that file."""

    def make(frame: pd.DataFrame | None = None, name: str = "transactions.parquet", **overrides: Any) -> Settings:
        df = tiny_raw if frame is None else frame
        src_dir = tmp_path / "source"
        src_dir.mkdir(parents=True, exist_ok=True)
        path = src_dir / name
        if name.endswith(".csv"):
            df.to_csv(path, index=False)
        else:
            df.to_parquet(path, index=False)
        kw: dict[str, Any] = {"storage": str(tmp_path / "data"), "source": str(path)}
        kw.update(overrides)
        return Settings(**kw).validated()

    return make


@pytest.fixture
def webhook():
    from webhook_server import Webhook

    hook = Webhook()
    yield hook
    hook.close()
