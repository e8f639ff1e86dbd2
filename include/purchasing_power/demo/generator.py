"""The generative process of the seeded demo transactions (UCI "Online Retail" schema).

The frame has the canonical columns and dtypes of UCI Online Retail::

    InvoiceNo (str, 6 digits, "C" prefix on cancellations), StockCode (str), Description (str,
    upper case, sometimes null), Quantity (int64), InvoiceDate (naive timestamp[us], minute
    resolution), UnitPrice (float64, GBP), CustomerID (float64, NaN for guests), Country (str)

Generative process
------------------
Everything is drawn from one ``numpy.random.default_rng(seed)``; the product catalogue comes from
its own fixed ``default_rng`` so that it (and any text-embedding cache built on it) is the same
for every seed. Same arguments -> byte-identical output.

*Calendar.* Each day ``d`` in ``[start, end]`` has an intensity factor
``season[segment, month(d)] * weekday[dow(d)] * open(d)``: November peak and January trough,
very few Saturday sales (factor 0.02), Sunday about 2/3 of a weekday, and the shop closed from
24 December to 2 January. Invoices get a time of day between 07:00 and 20:59 with a mid-day peak.

*Customers* (``n_customers``). Each belongs to a segment with its own parameters:

=========== ===== ======================== ============== ============ ===========================
segment     share rate lambda ~ Gamma(r,a) dropout p~Beta mean order   prefers
=========== ===== ======================== ============== ============ ===========================
home        0.38  r=1.1, a=55 days         (1.0, 7.0)     ~GBP 150     kitchen, home decor, garden
party       0.24  r=0.9, a=75 days         (1.3, 3.2)     ~GBP 190     party, christmas (seasonal)
gift        0.32  r=0.7, a=70 days         (1.5, 3.5)     ~GBP 120     bags, stationery, jewellery
wholesale   0.06  r=2.0, a=22 days         (0.8, 9.0)     ~GBP 1100    "SET OF n" bulk items, big
                                                                       quantities
=========== ===== ======================== ============== ============ ===========================

A customer is acquired on a day drawn from ``Beta(0.7, 1.3)`` over the period (more early on,
some at the very start as the "existing base"), weighted by the calendar, and places its first
order that day. Repeat orders follow a BG/NBD process: a Poisson process with rate ``lambda``
(per day) modulated by the segment's calendar (non-homogeneous, by thinning), and after every
purchase the customer drops out for good with probability ``p``. So the number of purchases is
``Geometric(p)``, truncated by the end of the period.

*Spend* is Gamma-Gamma-like: each customer has a mean order value ``m ~ LogNormal(log median,
0.55)`` (x1.4 for customers outside the UK) and each order's value is ``m * LogNormal(-s^2/2,
s=0.5)``. The value sets the basket size: ``1 + Poisson(value / typical line value - 1)`` invoice
lines, clipped to 1..40. Each line is a catalogue product: with a per-customer probability
(``Beta(2, 3)``) one of the customer's 8 favourites (re-orders), otherwise a product family drawn
from the customer's own family preferences (a Dirichlet around the segment's preferences) times
the family's seasonality (christmas items in Q4, garden in spring, hot water bottles in winter),
then a product by Zipf-like popularity (wholesalers strongly prefer "SET OF n" bulk items).
Quantities are skewed pack sizes (1, 2, 3, 4, 6, 12, 24, ...; wholesalers 12..288), smaller for
expensive items and larger for cheap ones. The line price is the list price (30 % of products get
a price rise half way through the period) with small noise: bulk-tier discounts on large
quantities, guest mark-ups and occasional manual overrides, snapped to shop-like price points.

*Text signal.* Because segments differ in both product mix and behaviour (seasonal churn-prone
party buyers, steady loyal kitchen/home buyers, frequent bulk wholesalers), the descriptions a
customer bought carry information about its future purchases and spend.

*Guests.* Orders without a customer (``CustomerID`` NaN) arrive by the global calendar until they
make up ~20 % of the invoice lines; they have their own value distribution and price mark-ups.

*Country.* ~8 % of retail customers and ~30 % of wholesalers are outside the UK (Germany, France,
EIRE, Spain, Netherlands, ...); guests are 97 % UK. Most orders from abroad carry a postage line
(``StockCode`` "POST", ``Description`` "POSTAGE").

*Noise and anomalies* (rates are of purchase lines; at least a few of each kind, whatever the size):

* cancellations/returns (~2 % of lines): a "C"-prefixed invoice of the same customer, later than
  the purchase (same day up to 30 days), same product and price, negative quantity (the full line
  quantity, or part of it for a return);
* stock adjustments: a non-"C" invoice without customer, lower-case description ("damaged", ...),
  negative quantity and zero price;
* null (~0.2 %) or empty Description, zero UnitPrice (~0.3 %), Quantity 0, negative UnitPrice,
  exact duplicate lines (~0.5 %), and trailing spaces on some catalogue descriptions.

Invoice numbers are sequential in time order. Rows are sorted by InvoiceDate, InvoiceNo and line
order. With the defaults (2,500 customers, 2023-01-01..2024-12-31) the frame has about 150k rows
(~14k invoices) and is generated in well under a second.

The data (families, price points, segment parameters, countries, ...) are in ``catalogue.json``
(see :mod:`purchasing_power.demo.catalogue`); this module is the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from purchasing_power.demo.catalogue import FAMILIES, Catalogue, build_catalogue, shop_data, snap
from purchasing_power.schemas import CANONICAL_COLUMNS

__all__ = ["generate_demo_transactions", "DEMO_SCHEMA_DTYPES"]

#: pandas dtypes of the generated frame (those of the real UCI file read with pyarrow).
DEMO_SCHEMA_DTYPES = {
    "InvoiceNo": "object",
    "StockCode": "object",
    "Description": "object",
    "Quantity": "int64",
    "InvoiceDate": "datetime64[us]",
    "UnitPrice": "float64",
    "CustomerID": "float64",
    "Country": "object",
}

_MAX_LINES = 40
_FIRST_INVOICE = 536365

# --------------------------------------------------------------------------------------------
# Segments, calendar, countries, pack sizes (values in catalogue.json)
# --------------------------------------------------------------------------------------------

_DATA = shop_data()
_SEGMENTS = tuple(s["name"] for s in _DATA["segments"])
_WHOLESALE = _SEGMENTS.index("wholesale")
_GUEST = len(_SEGMENTS)  # row index of the guests' preferences / calendar


def _by_segment(key: str) -> np.ndarray:
    return np.array([s[key] for s in _DATA["segments"]], dtype=np.float64)


_SEG_SHARE = _by_segment("share")
_SEG_R = _by_segment("rate_shape")  # Gamma shape of the purchase rate
_SEG_ALPHA = _by_segment("rate_scale_days")  # Gamma scale parameter alpha (days): E[lambda] = r/alpha
_SEG_A = _by_segment("dropout_a")  # Beta(a, b) dropout probability
_SEG_B = _by_segment("dropout_b")
_SEG_MOV = _by_segment("median_order_value")  # median of the customer's mean order value
_SEG_FOREIGN = _by_segment("foreign_share")
_ROWS = (*_DATA["segments"], _DATA["guests"])  # segments, then guests
#: Typical value of one invoice line (GBP) by segment and for guests (retail / wholesale quantities).
_SEG_LINE_VALUE = np.array([r["line_value"] for r in _ROWS], dtype=np.float64)
#: Family preferences (rows: segments, then guests; columns: FAMILIES order).
_FAM_PREF = np.array([[r["family_preference"][f.name] for f in FAMILIES] for r in _ROWS], dtype=np.float64)
#: Purchase-rate seasonality (rows as _FAM_PREF; Jan..Dec).
_SEASON = np.array([r["season"] for r in _ROWS], dtype=np.float64)
_WEEKDAY = np.array(_DATA["weekday"], dtype=np.float64)  # Mon..Sun
#: Invoice hours (mid-day peak, as in a UK wholesaler's web shop) and their weights.
_HOUR_W = np.array(_DATA["invoice_hours"]["weights"], dtype=np.float64)
_HOURS = _DATA["invoice_hours"]["first"] + np.arange(len(_HOUR_W))
_COUNTRIES = np.array([c["name"] for c in _DATA["countries"]], dtype=object)
_COUNTRY_W = np.array([c["weight"] for c in _DATA["countries"]], dtype=np.float64)
_COUNTRY_POSTAGE = np.array([c["postage"] for c in _DATA["countries"]], dtype=np.float64)  # GBP
_RETAIL_QTY = np.array(_DATA["pack_sizes"]["retail"]["sizes"], dtype=np.int64)
_RETAIL_QTY_P = np.array(_DATA["pack_sizes"]["retail"]["p"], dtype=np.float64)
_WHOLESALE_QTY = np.array(_DATA["pack_sizes"]["wholesale"]["sizes"], dtype=np.int64)
_WHOLESALE_QTY_P = np.array(_DATA["pack_sizes"]["wholesale"]["p"], dtype=np.float64)
_ADJUST_TEXT = np.array(_DATA["adjustment_texts"], dtype=object)


@dataclass(frozen=True)
class _Calendar:
    n_days: int
    month: np.ndarray  # 0..11
    dow: np.ndarray  # 0 = Monday
    factor: np.ndarray  # (5, n_days): segment/guest intensity factor per day
    start64: np.datetime64


def _calendar(start: date, end: date) -> _Calendar:
    n_days = (end - start).days + 1
    days = np.datetime64(start, "D") + np.arange(n_days)
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    dom = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    dow = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    closed = ((month == 11) & (dom >= 24)) | ((month == 0) & (dom <= 2))
    if closed.all():  # a period entirely inside the Christmas closure: ignore the closure
        closed[:] = False
    factor = _SEASON[:, month] * _WEEKDAY[dow][None, :] * (~closed)[None, :]
    return _Calendar(n_days, month, dow, factor, np.datetime64(start, "us"))


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category per row of a (rows, k) probability matrix (rows need not be normalised)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def _sample_products(rng: np.random.Generator, cat: Catalogue, fam_probs: np.ndarray,
                     wholesale: np.ndarray) -> np.ndarray:
    """Product index per row: a family from ``fam_probs`` rows, then a product by popularity."""
    fam = _categorical(rng, fam_probs)
    u = rng.random(len(fam))
    prod = np.empty(len(fam), dtype=np.int64)
    for fi in range(len(FAMILIES)):
        members = np.flatnonzero(cat.family == fi)
        for flag, weights in ((False, cat.weight), (True, cat.weight_wholesale)):
            m = (fam == fi) & (wholesale == flag)
            if not m.any():
                continue
            cum = np.cumsum(weights[members])
            j = np.searchsorted(cum, u[m] * cum[-1], side="right")
            prod[m] = members[np.minimum(j, len(members) - 1)]
    return prod



def generate_demo_transactions(
    n_customers: int = 2500,
    start: date = date(2023, 1, 1),
    end: date = date(2024, 12, 31),
    seed: int = 7,
    *,
    customer_id_start: int | None = None,
    invoice_start: int | None = None,
) -> pd.DataFrame:
    """Generate the demo transactions (canonical UCI Online Retail columns and dtypes).

    Deterministic for the same arguments (the process: module docstring). ``customer_id_start``
    / ``invoice_start`` put the ids in ``[start, start + 3n)`` and number invoices from there, so
    blocks generated apart never share one (``writer.write_demo_source``, large sources)."""
    if isinstance(start, str):
        start = date.fromisoformat(start)
    if isinstance(end, str):
        end = date.fromisoformat(end)
    if int(n_customers) < 1:
        raise ValueError(f"n_customers must be >= 1, got {n_customers}")
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    n = int(n_customers)
    rng = np.random.default_rng(seed)
    cat = build_catalogue()
    cal = _calendar(start, end)
    T = cal.n_days

    # ---- customers ---------------------------------------------------------------------------
    seg = rng.choice(len(_SEGMENTS), size=n, p=_SEG_SHARE)
    is_wh = seg == _WHOLESALE
    x = (np.arange(T) + 0.5) / T
    acq_w = x ** (0.7 - 1) * (1 - x) ** (1.3 - 1) * _WEEKDAY[cal.dow] * (cal.factor[_GUEST] > 0)
    acq = rng.choice(T, size=n, p=acq_w / acq_w.sum())
    lam = rng.gamma(_SEG_R[seg], 1.0 / _SEG_ALPHA[seg])  # purchases per day
    p_drop = rng.beta(_SEG_A[seg], _SEG_B[seg])
    foreign = rng.random(n) < _SEG_FOREIGN[seg]
    country_idx = np.where(foreign, rng.choice(len(_COUNTRIES), size=n, p=_COUNTRY_W / _COUNTRY_W.sum()), -1)
    mov = np.exp(np.log(_SEG_MOV[seg]) + np.log(1.4) * foreign + rng.normal(0.0, 0.55, n))
    fam_pref = rng.gamma(8.0 * _FAM_PREF[seg] / _FAM_PREF[seg].sum(axis=1, keepdims=True))
    fam_pref = np.maximum(fam_pref, 1e-9)
    fav_share = rng.beta(2.0, 3.0, n)
    n_fav = 8
    fav_rows = np.repeat(np.arange(n), n_fav)
    fav = _sample_products(rng, cat, fam_pref[fav_rows], is_wh[fav_rows]).reshape(n, n_fav)
    lo_id, span = 12346, max(6000, 3 * n)
    if lo_id + span > 100_000:
        lo_id, span = 10_000, max(90_000, 2 * n)
    lo_id, span = (int(customer_id_start), 3 * n) if customer_id_start is not None else (lo_id, span)
    cust_id = rng.choice(span, size=n, replace=False) + lo_id

    # ---- customer orders: BG/NBD with calendar thinning -----------------------------------------
    seg_max = cal.factor[: len(_SEGMENTS)].max(axis=1)
    seg_max = np.where(seg_max > 0, seg_max, 1.0)
    remaining = T - (acq + 1)
    n_cand = rng.poisson(lam * seg_max[seg] * np.maximum(remaining, 0))
    c_cust = np.repeat(np.arange(n), n_cand)
    c_t = acq[c_cust] + 1 + rng.random(len(c_cust)) * remaining[c_cust]
    c_day = np.minimum(np.floor(c_t).astype(np.int64), T - 1)
    accept = rng.random(len(c_cust)) * seg_max[seg[c_cust]] < cal.factor[seg[c_cust], c_day]
    order = np.lexsort((c_t, c_cust))
    order = order[accept[order]]
    r_cust, r_day = c_cust[order], c_day[order]
    rank = np.arange(len(r_cust)) - np.searchsorted(r_cust, r_cust, side="left")
    n_purchases = rng.geometric(p_drop)  # purchases made before dropping out (first included)
    keep = rank < n_purchases[r_cust] - 1
    o_cust = np.concatenate([np.arange(n), r_cust[keep]])
    o_day = np.concatenate([acq, r_day[keep]])
    o_val = mov[o_cust] * np.exp(rng.normal(-0.125, 0.5, len(o_cust)))
    o_seg = seg[o_cust]
    o_lines = 1 + rng.poisson(np.maximum(o_val / _SEG_LINE_VALUE[o_seg] - 1.0, 0.0))
    o_lines = np.minimum(o_lines, _MAX_LINES)

    # ---- guest orders until ~20 % of the product lines ------------------------------------------
    target_guest_lines = int(round(o_lines.sum() * 0.21))
    g_w = cal.factor[_GUEST]
    g_w = g_w / g_w.sum() if g_w.sum() > 0 else np.full(T, 1.0 / T)
    n_try = max(4, int(target_guest_lines / 8) + 8)
    g_val = np.exp(np.log(110.0) + rng.normal(0.0, 0.8, n_try))
    g_lines = np.minimum(1 + rng.poisson(np.maximum(g_val / _SEG_LINE_VALUE[_GUEST] - 1.0, 0.0)), _MAX_LINES)
    n_guest = max(1, int(np.searchsorted(np.cumsum(g_lines), target_guest_lines)) + 1)
    n_guest = min(n_guest, n_try)
    g_lines = g_lines[:n_guest]
    g_day = rng.choice(T, size=n_guest, p=g_w)

    # ---- all purchase orders ------------------------------------------------------------------
    n_co = len(o_cust)
    ord_cust = np.concatenate([o_cust, np.full(n_guest, -1)])
    ord_seg = np.concatenate([o_seg, np.full(n_guest, _GUEST)])
    ord_day = np.concatenate([o_day, g_day])
    ord_lines = np.concatenate([o_lines, g_lines])
    n_ord = len(ord_cust)
    hours = rng.choice(_HOURS, size=n_ord, p=_HOUR_W / _HOUR_W.sum())
    ord_min = ord_day * 1440 + hours * 60 + rng.integers(0, 60, n_ord)
    g_foreign = rng.random(n_guest) < 0.03
    g_country = np.where(g_foreign, rng.choice(len(_COUNTRIES), size=n_guest, p=_COUNTRY_W / _COUNTRY_W.sum()), -1)
    ord_country = np.concatenate([country_idx[o_cust], g_country])

    # ---- invoice lines ------------------------------------------------------------------------
    l_ord = np.repeat(np.arange(n_ord), ord_lines)
    starts = np.concatenate([[0], np.cumsum(ord_lines)[:-1]])
    l_no = np.arange(len(l_ord)) - starts[l_ord]
    l_cust = ord_cust[l_ord]
    l_seg = ord_seg[l_ord]
    l_day = ord_day[l_ord]
    l_month = cal.month[l_day]
    l_wh = l_seg == _WHOLESALE
    n_l = len(l_ord)
    pref_rows = np.vstack([fam_pref, _FAM_PREF[_GUEST][None, :]])
    l_pref_row = np.where(l_cust >= 0, l_cust, n)
    fam_season = np.array([f.season for f in FAMILIES])  # (families, 12)
    fam_probs = pref_rows[l_pref_row] * fam_season[:, l_month].T
    prod = _sample_products(rng, cat, fam_probs, l_wh)
    # re-orders of favourites (only when the favourite is in season)
    fav_pick = fav[np.maximum(l_cust, 0), rng.integers(0, n_fav, n_l)]
    use_fav = (l_cust >= 0) & (rng.random(n_l) < fav_share[np.maximum(l_cust, 0)])
    use_fav &= fam_season[cat.family[fav_pick], l_month] >= 0.4
    prod = np.where(use_fav, fav_pick, prod)
    # one line per product and invoice: drop repeats (the first occurrence stays)
    _, first = np.unique(l_ord * len(cat.code) + prod, return_index=True)
    kept = np.zeros(n_l, dtype=bool)
    kept[first] = True
    l_ord, l_cust, l_seg, l_day, l_month, l_wh, prod = (
        a[kept] for a in (l_ord, l_cust, l_seg, l_day, l_month, l_wh, prod)
    )
    n_l = len(l_ord)
    ord_lines = np.bincount(l_ord, minlength=n_ord)
    starts = np.concatenate([[0], np.cumsum(ord_lines)[:-1]])
    l_no = np.arange(n_l) - starts[l_ord]

    # quantities: skewed pack sizes
    qty = np.where(
        l_wh,
        rng.choice(_WHOLESALE_QTY, size=n_l, p=_WHOLESALE_QTY_P),
        rng.choice(_RETAIL_QTY, size=n_l, p=_RETAIL_QTY_P),
    )
    list_price = np.where(l_day >= T // 2, cat.price_later[prod], cat.price[prod])
    cheap = (list_price < 1.0) & ~l_wh
    qty = np.where(cheap, qty * rng.choice([1, 2, 4], size=n_l, p=[0.5, 0.3, 0.2]), qty)
    qty = np.where(list_price >= 8.0, np.maximum(1, qty // 4), qty)
    qty = np.where(cat.bulk[prod], np.maximum(1, qty // 3), qty)

    # price noise: bulk tier, guest mark-up, manual overrides; snapped to price points
    price = list_price.copy()
    tier = (qty >= 24) & (list_price >= 0.5) & (rng.random(n_l) < 0.7)
    price = np.where(tier, snap(list_price * 0.85), price)
    markup = (l_cust < 0) & (rng.random(n_l) < 0.6)
    price = np.where(markup, snap(list_price * rng.uniform(1.12, 1.3, n_l)), price)
    manual = rng.random(n_l) < 0.015
    price = np.where(manual, snap(list_price * rng.uniform(0.85, 1.15, n_l)), price)

    code = cat.code[prod]
    desc = cat.desc[prod]
    l_kind = np.zeros(n_l, dtype=np.int8)  # 0 product line, 1 postage

    # postage lines: most foreign orders, very few UK ones
    post_p = np.where(ord_country >= 0, 0.75, 0.004)
    has_post = rng.random(n_ord) < post_p
    p_ord = np.flatnonzero(has_post)
    p_qty = rng.choice([1, 2, 3], size=len(p_ord), p=[0.75, 0.18, 0.07])
    p_price = np.where(ord_country[p_ord] >= 0, _COUNTRY_POSTAGE[np.maximum(ord_country[p_ord], 0)], 5.0)

    l_ord = np.concatenate([l_ord, p_ord])
    l_no = np.concatenate([l_no, ord_lines[p_ord]])
    l_cust = np.concatenate([l_cust, ord_cust[p_ord]])
    code = np.concatenate([code, np.full(len(p_ord), "POST", dtype=object)])
    desc = np.concatenate([desc, np.full(len(p_ord), "POSTAGE", dtype=object)])
    qty = np.concatenate([qty, p_qty]).astype(np.int64)
    price = np.concatenate([price, p_price]).astype(np.float64)
    l_kind = np.concatenate([l_kind, np.ones(len(p_ord), dtype=np.int8)])
    n_l = len(l_ord)
    l_min = ord_min[l_ord]

    # ---- cancellations and returns (registered customers only) ---------------------------------
    cancel_ord = np.flatnonzero((ord_cust >= 0) & (rng.random(n_ord) < 0.075))
    is_cand = np.isin(l_ord, cancel_ord) & (l_kind == 0)
    pick = is_cand & (rng.random(n_l) < 0.35)
    # at least one cancelled line per selected order: its first product line
    first_line = is_cand & (l_no == 0)
    pick |= first_line & ~np.isin(l_ord, l_ord[pick])
    c_idx = np.flatnonzero(pick)
    c_orders, c_inv = np.unique(l_ord[c_idx], return_inverse=True)
    # cancellation time: same day (1..180 min later) or 1..30 days later, within the period
    n_ci = len(c_orders)
    o_day_c = ord_min[c_orders] // 1440
    later = rng.random(n_ci) < 0.5
    max_delay = np.minimum(30, T - 1 - o_day_c)
    delay_days = np.where(later & (max_delay >= 1), 1 + np.floor(rng.random(n_ci) * np.maximum(max_delay, 1)), 0)
    delay_days = delay_days.astype(np.int64)
    # a return booked on a later day lands on a day the shop is open (else: same day)
    open_day = cal.factor[_GUEST] > 0
    next_open = np.where(open_day, np.arange(T), T)
    next_open = np.minimum.accumulate(next_open[::-1])[::-1]
    moved = next_open[np.minimum(o_day_c + delay_days, T - 1)]
    delay_days = np.where((delay_days > 0) & (moved < T), moved - o_day_c, 0)
    c_hour = rng.choice(_HOURS, size=n_ci, p=_HOUR_W / _HOUR_W.sum())
    ci_min = np.where(
        delay_days > 0,
        (o_day_c + delay_days) * 1440 + c_hour * 60 + rng.integers(0, 60, n_ci),
        np.maximum(
            ord_min[c_orders] + 1,
            np.minimum(ord_min[c_orders] + rng.integers(1, 181, n_ci), o_day_c * 1440 + 20 * 60 + 59),
        ),
    )
    full = rng.random(len(c_idx)) < 0.65
    c_qty = np.where(full, qty[c_idx], 1 + np.floor(rng.random(len(c_idx)) * qty[c_idx]).astype(np.int64))

    # ---- stock adjustments: non-"C" invoice, negative quantity, lower-case text, no customer ---
    n_purchase_lines = n_l
    n_adj = max(2, int(round(n_purchase_lines * 0.0008)))
    a_day = rng.choice(T, size=n_adj, p=g_w)
    a_min = a_day * 1440 + rng.choice(_HOURS, size=n_adj, p=_HOUR_W / _HOUR_W.sum()) * 60 + rng.integers(0, 60, n_adj)
    a_prod = rng.integers(0, len(cat.code), n_adj)
    a_qty = -rng.choice([1, 2, 3, 6, 12, 24, 48, 100], size=n_adj)

    # ---- invoices: numbers in time order ------------------------------------------------------
    inv_min = np.concatenate([ord_min, ci_min, a_min])
    inv_kind = np.concatenate([np.zeros(n_ord, np.int8), np.ones(n_ci, np.int8), np.full(n_adj, 2, np.int8)])
    inv_tie = rng.random(len(inv_min))
    inv_order = np.lexsort((inv_tie, inv_min))
    n_inv = len(inv_min)
    first_no = _FIRST_INVOICE if _FIRST_INVOICE + n_inv < 1_000_000 else 100_000
    first_no = int(invoice_start) if invoice_start is not None else first_no
    inv_no = np.empty(n_inv, dtype=np.int64)
    inv_no[inv_order] = first_no + np.arange(n_inv)
    inv_str = np.array(
        [("C" if k == 1 else "") + f"{v:06d}" for k, v in zip(inv_kind.tolist(), inv_no.tolist())],
        dtype=object,
    )
    inv_cust = np.concatenate([ord_cust, ord_cust[c_orders], np.full(n_adj, -1)])
    inv_country = np.concatenate([ord_country, ord_country[c_orders], np.full(n_adj, -1)])

    # ---- assemble rows ------------------------------------------------------------------------
    row_inv = np.concatenate([l_ord, n_ord + c_inv, n_ord + n_ci + np.arange(n_adj)])
    row_line = np.concatenate([l_no, l_no[c_idx], np.zeros(n_adj, np.int64)])
    row_code = np.concatenate([code, code[c_idx], cat.code[a_prod]])
    row_desc = np.concatenate([desc, desc[c_idx], rng.choice(_ADJUST_TEXT, size=n_adj)])
    row_qty = np.concatenate([qty, -c_qty, a_qty]).astype(np.int64)
    row_price = np.concatenate([price, price[c_idx], np.zeros(n_adj)])

    # ---- malformed lines (disjoint sets of purchase product lines that were not cancelled) -----
    eligible = np.flatnonzero((l_kind == 0) & ~pick)
    eligible = eligible[rng.permutation(len(eligible))]
    guest_first = np.concatenate([eligible[l_cust[eligible] < 0], eligible[l_cust[eligible] >= 0]])
    n_null = max(2, int(round(n_purchase_lines * 0.0018)))
    null_idx = guest_first[: int(n_null * 0.8)]
    rest = np.setdiff1d(eligible, null_idx, assume_unique=True)
    rest = rest[rng.permutation(len(rest))]
    counts = {
        "null": n_null - len(null_idx),
        "empty": max(1, int(round(n_purchase_lines * 0.0003))),
        "zero_price": max(2, int(round(n_purchase_lines * 0.0015))),
        "zero_qty": max(1, int(round(n_purchase_lines * 0.0002))),
        "neg_price": max(1, int(round(n_purchase_lines * 0.00005))),
        "dup": max(3, int(round(n_purchase_lines * 0.005))),
    }
    sets: dict[str, np.ndarray] = {}
    pos = 0
    for name, k in counts.items():
        sets[name] = rest[pos : pos + k]
        pos += k
    row_desc[null_idx] = None
    row_price[null_idx] = 0.0  # as in the real file: no description, no price, mostly guests
    row_desc[sets["null"]] = None
    row_desc[sets["empty"]] = ""
    row_price[sets["zero_price"]] = 0.0
    row_qty[sets["zero_qty"]] = 0
    row_price[sets["neg_price"]] = -np.round(row_price[sets["neg_price"]] * 100.0, 2)
    dup = np.sort(sets["dup"])
    row_inv = np.concatenate([row_inv, row_inv[dup]])
    row_line = np.concatenate([row_line, row_line[dup]])
    row_code = np.concatenate([row_code, row_code[dup]])
    row_desc = np.concatenate([row_desc, row_desc[dup]])
    row_qty = np.concatenate([row_qty, row_qty[dup]])
    row_price = np.concatenate([row_price, row_price[dup]])

    # ---- sort: InvoiceDate, InvoiceNo, line order (stable: duplicates follow their original) ---
    _, inv_rank = np.unique(inv_str, return_inverse=True)
    row_min = inv_min[row_inv]
    srt = np.lexsort((row_line, inv_rank[row_inv], row_min))
    row_inv, row_min = row_inv[srt], row_min[srt]
    r_cust = inv_cust[row_inv]
    r_country = inv_country[row_inv]
    country = np.where(r_country >= 0, _COUNTRIES[np.maximum(r_country, 0)], "United Kingdom").astype(object)
    customer = np.where(r_cust >= 0, cust_id[np.maximum(r_cust, 0)].astype(np.float64), np.nan)
    frame = pd.DataFrame(
        {
            "InvoiceNo": inv_str[row_inv],
            "StockCode": row_code[srt],
            "Description": row_desc[srt],
            "Quantity": row_qty[srt],
            "InvoiceDate": cal.start64 + row_min.astype("timedelta64[m]").astype("timedelta64[us]"),
            "UnitPrice": np.round(row_price[srt], 2),
            "CustomerID": customer,
            "Country": country,
        },
        columns=list(CANONICAL_COLUMNS),
    )
    return frame
