"""The demo's user-written texts: seeded customer reviews written beside the demo transactions
(``texts.parquet``, columns ``CustomerID``, ``TextDate``, ``Text``).

**The signal is synthetic** and says nothing about real customers. It is built so that the
user-text features have something to find, and the benchmark can show whether they do:

* After each purchase day of a known customer, with probability :data:`REVIEW_RATE`, the customer
  writes a review 1 to 6 days later (at a time between 08:00 and 22:59).
* A review is an *intent* review (phrases of purchase intent: "will order again soon", "je vais
  recommander", "bald wieder bestellen", ...) with probability :data:`P_INTENT_BUYER` when the
  customer really buys again within 30 days after the review's day, and :data:`P_INTENT_OTHER`
  otherwise; the others are neutral or negative ("arrived fine", "trop cher", ...). So a recent
  review carries information about the next 30 days that the transactions alone do not.
* Reviews are in English, French, German and Spanish, some with full-width letters, zero-width
  or control characters and runs of whitespace (what the clean stage's NFKC normalisation is for).
* A few rows are bad on purpose: empty or blank text, no customer, an unparseable date, and
  one very long text (over the clean stage's truncation limit).

``TextDate`` is ISO 8601 text in UTC (``2024-03-05T14:07:00Z``), so the demo also exercises date
parsing. Everything is drawn from ``numpy.random.default_rng(seed)``: same transactions and seed,
same bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

REVIEW_RATE = 0.35
P_INTENT_BUYER = 0.75
P_INTENT_OTHER = 0.15
HORIZON_DAYS = 30

INTENT = (
    "Will definitely order again soon, need more for the shop",
    "Great quality, planning a bigger order next month",
    "Love it! Already making a list for my next order",
    "Running low already, will restock this week",
    "Perfect for our events, ordering more for the next one",
    "Je vais recommander très bientôt, parfait",
    "Qualité top, je reviens commander le mois prochain",
    "Super Qualität, ich bestelle bald wieder",
    "Wir brauchen mehr davon, nächste Bestellung kommt",
    "Excelente, volveré a comprar pronto",
    "ｇｒｅａｔ value, will buy again",
)
OTHER = (
    "Arrived fine.",
    "Item as described",
    "ok",
    "Packaging was damaged, disappointed",
    "Too expensive for what it is",
    "Colours differ from the photo, not ordering again",
    "Livraison correcte",
    "Trop cher, déçu",
    "Entspricht der Beschreibung",
    "Leider beschädigt angekommen",
    "Probablemente no vuelva a comprar",
    "Llegó bien",
)
_NOISE = ("  ", "\u200b", "\t", "\n", " \u00a0")


def generate_demo_reviews(transactions: pd.DataFrame, seed: int = 7) -> pd.DataFrame:
    """The reviews of the demo customers in ``transactions`` (the generator's frame), sorted by
    date and customer; see the module docstring for the process."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([int(seed), 16])
    tx = transactions
    sale = tx["CustomerID"].notna() & (tx["Quantity"] > 0) & ~tx["InvoiceNo"].astype(str).str.startswith("C")
    days = (
        pd.DataFrame({"cust": tx.loc[sale, "CustomerID"].astype("float64"), "day": pd.to_datetime(tx.loc[sale, "InvoiceDate"]).dt.normalize().astype("datetime64[ns]")})
        .drop_duplicates()
        .sort_values(["cust", "day"], kind="mergesort")
        .reset_index(drop=True)
    )
    last_day = days["day"].max() if len(days) else pd.Timestamp("2000-01-01")
    write = rng.random(len(days)) < REVIEW_RATE
    lag = rng.integers(1, 7, size=len(days))
    minute = rng.integers(8 * 60, 23 * 60, size=len(days))
    rev = days.assign(t=days["day"] + pd.to_timedelta(lag, unit="D"), minute=minute)[write]
    rev = rev[rev["t"] <= last_day].sort_values(["t", "cust"], kind="mergesort").reset_index(drop=True)
    nxt = pd.merge_asof(
        rev[["t", "cust"]], days.rename(columns={"day": "next"}).assign(t=lambda d: d["next"]).sort_values("t"),
        on="t", by="cust", direction="forward", allow_exact_matches=False,
    )["next"]
    buys = (nxt.notna() & (nxt <= rev["t"] + pd.Timedelta(days=HORIZON_DAYS))).to_numpy()
    intent = rng.random(len(rev)) < np.where(buys, P_INTENT_BUYER, P_INTENT_OTHER)
    pick_i = rng.integers(0, len(INTENT), size=len(rev))
    pick_o = rng.integers(0, len(OTHER), size=len(rev))
    noise = rng.integers(0, len(_NOISE), size=len(rev))
    noisy = rng.random(len(rev)) < 0.1
    texts = [
        (INTENT[i] if k else OTHER[o]).replace(" ", _NOISE[z], 1) if n else (INTENT[i] if k else OTHER[o])
        for k, i, o, z, n in zip(intent, pick_i, pick_o, noise, noisy)
    ]
    ts = rev["t"] + pd.to_timedelta(rev["minute"], unit="min")
    out = pd.DataFrame({"CustomerID": rev["cust"].to_numpy(), "TextDate": ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy(dtype=object),
                        "Text": np.array(texts, dtype=object)})
    return _with_bad_rows(out, rng)


def _with_bad_rows(out: pd.DataFrame, rng: Any) -> pd.DataFrame:
    """A few rows of each kind the clean stage must quarantine or truncate (at fixed seeded
    positions; none when there are fewer than 20 reviews)."""
    if len(out) < 20:
        return out
    out = out.copy()
    idx = rng.choice(len(out), size=6, replace=False)
    out.loc[idx[0], "Text"] = "   "
    out.loc[idx[1], "Text"] = None
    out.loc[idx[2], "CustomerID"] = float("nan")
    out.loc[idx[3], "TextDate"] = "not a date"
    out.loc[idx[4], "Text"] = "Will order again. " * 300  # 5,400 characters: truncated by clean
    out.loc[idx[5], "Text"] = "\u0000\u0007 control characters\u0085 only around me \u200b"
    return out


def to_parquet_bytes(df: pd.DataFrame) -> bytes:
    """The reviews as Parquet (zstd): CustomerID float64, TextDate and Text text."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("CustomerID", pa.float64()), ("TextDate", pa.large_string()), ("Text", pa.large_string())])
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), buf, compression="zstd")
    return buf.getvalue()


def write_demo_reviews(path: str, transactions: pd.DataFrame, seed: int = 7) -> str:
    """Generate the reviews of ``transactions`` and write them atomically to ``path``."""
    from purchasing_power.storage import atomic_write_bytes

    atomic_write_bytes(path, to_parquet_bytes(generate_demo_reviews(transactions, seed)))
    return path
