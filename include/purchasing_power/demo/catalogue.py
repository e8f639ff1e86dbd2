"""The demo shop's data and product catalogue.

Everything that is data rather than process lives in ``catalogue.json`` next to this module: the
product families (items with singular/plural names and a list-price range, colours, designs and
a product-choice seasonality), the shop's price points, the customer segments' and the guests'
behaviour, the weekday and hour-of-day intensities, the foreign countries with their order
weights and postage, pack sizes and the texts of stock adjustments. :func:`shop_data` reads it.

:func:`build_catalogue` turns the families into ~400 products (``StockCode``, ``Description``,
list prices, popularity) with its own fixed random generator, so the catalogue (and any
text-embedding cache built on it) is the same whatever the run's seed.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DATA_FILE = Path(__file__).resolve().parent / "catalogue.json"
CATALOGUE_SEED = 20101201  # fixed: the shop's catalogue does not depend on the run's seed
PRODUCTS_PER_FAMILY = 34  # plus up to 6 bulk "SET OF n" items: ~400 products in all


@functools.lru_cache(maxsize=1)
def shop_data() -> dict[str, Any]:
    """The parsed ``catalogue.json`` (cached; treat it as read-only)."""
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Family:
    name: str
    items: tuple[tuple[str, str, float, float], ...]  # (singular, plural, price lo, price hi)
    colours: tuple[str, ...]
    designs: tuple[str, ...]
    season: tuple[float, ...]  # product-choice factor by month (Jan..Dec)


FAMILIES: tuple[Family, ...] = tuple(
    Family(
        name=f["name"],
        items=tuple((str(s), str(p), float(lo), float(hi)) for s, p, lo, hi in f["items"]),
        colours=tuple(f["colours"]),
        designs=tuple(f["designs"]),
        season=tuple(float(x) for x in f["season"]),
    )
    for f in shop_data()["families"]
)

#: Price points the shop uses; every price is snapped to the nearest one (in log space).
PRICE_POINTS = np.array(shop_data()["price_points"], dtype=np.float64)
_LOG_PP = np.log(PRICE_POINTS)
_PP_MID = (_LOG_PP[1:] + _LOG_PP[:-1]) / 2


def snap(prices: np.ndarray) -> np.ndarray:
    """Nearest shop price point (log scale)."""
    return PRICE_POINTS[np.searchsorted(_PP_MID, np.log(np.maximum(prices, 1e-3)))]


@dataclass(frozen=True)
class Catalogue:
    code: np.ndarray  # object: StockCode
    desc: np.ndarray  # object: Description
    family: np.ndarray  # int
    price: np.ndarray  # float list price (first half of the period)
    price_later: np.ndarray  # float list price (second half)
    bulk: np.ndarray  # bool: "SET OF n" items
    weight: np.ndarray  # float popularity
    weight_wholesale: np.ndarray  # float popularity for wholesalers (bulk boosted)


@functools.lru_cache(maxsize=1)
def build_catalogue() -> Catalogue:
    """The products of every family: colour and design variants of its items plus a few bulk
    "SET OF n" items, sampled, with stock codes, list prices (30 % rise half way) and popularity."""
    rng = np.random.default_rng(CATALOGUE_SEED)
    rows: list[tuple[str, int, float, bool, str]] = []  # (desc, family, price, bulk, variant key)
    for fi, fam in enumerate(FAMILIES):
        item_price = {it[0]: float(snap(np.array([np.exp(rng.uniform(np.log(it[2]), np.log(it[3])))]))[0])
                      for it in fam.items}
        plain: list[tuple[str, float, str]] = []
        for singular, _plural, _lo, _hi in fam.items:
            p = item_price[singular]
            for colour in fam.colours:
                plain.append((f"{colour} {singular}", p, f"{fi}:{singular}"))
            for design in fam.designs:
                dp = float(snap(np.array([p * rng.uniform(0.9, 1.15)]))[0])
                plain.append((f"{singular} {design}", dp, f"{fi}:{singular}:{design}"))
                plain.append((f"{design} {singular}", dp, f"{fi}:{design}:{singular}"))
        bulk: list[tuple[str, float, str]] = []
        for singular, plural, lo, _hi in fam.items:
            if lo > 1.5:
                continue
            for n in (3, 6, 12):
                for design in fam.designs:
                    price = float(snap(np.array([item_price[singular] * n * 0.6]))[0])
                    bulk.append((f"SET OF {n} {plural} {design}", price, f"{fi}:set{n}:{singular}:{design}"))
        pick = rng.choice(len(plain), size=min(PRODUCTS_PER_FAMILY, len(plain)), replace=False)
        for i in np.sort(pick):
            rows.append((plain[i][0], fi, plain[i][1], False, plain[i][2]))
        if bulk:
            pick = rng.choice(len(bulk), size=min(6, len(bulk)), replace=False)
            for i in np.sort(pick):
                rows.append((bulk[i][0], fi, bulk[i][1], True, bulk[i][2]))
    # de-duplicate descriptions (two templates can meet), keep first
    seen: set[str] = set()
    rows = [r for r in rows if not (r[0] in seen or seen.add(r[0]))]
    n = len(rows)

    # Stock codes: colour variants of one item share a 5-digit base with letter suffixes.
    keys = sorted({r[4] for r in rows})
    pool = np.concatenate([np.arange(20600, 23700), np.arange(84000, 85300), np.arange(90000, 90210)])
    bases = rng.choice(pool, size=len(keys), replace=False)
    base_of = dict(zip(keys, bases.tolist()))
    counts: dict[str, int] = {}
    variants = {k: sum(1 for r in rows if r[4] == k) for k in keys}
    codes = []
    for r in rows:
        k = r[4]
        j = counts.get(k, 0)
        counts[k] = j + 1
        codes.append(f"{base_of[k]}{chr(ord('A') + j)}" if variants[k] > 1 else str(base_of[k]))

    desc = np.array([r[0] for r in rows], dtype=object)
    # ~8 % of descriptions carry a trailing space, as in the real file (the cleaner must strip).
    trailing = rng.random(n) < 0.08
    desc[trailing] = np.array([d + " " for d in desc[trailing]], dtype=object)
    family = np.array([r[1] for r in rows], dtype=np.int64)
    price = np.array([r[2] for r in rows], dtype=np.float64)
    bulk_flag = np.array([r[3] for r in rows], dtype=bool)
    rise = rng.random(n) < 0.3
    idx = np.searchsorted(PRICE_POINTS, price) + 1
    price_later = np.where(rise, PRICE_POINTS[np.minimum(idx, len(PRICE_POINTS) - 1)], price)
    # Zipf-like popularity within each family, random ranks
    weight = np.empty(n)
    for fi in range(len(FAMILIES)):
        m = np.flatnonzero(family == fi)
        ranks = rng.permutation(len(m)) + 1
        weight[m] = 1.0 / ranks**0.5
    weight_wholesale = weight * np.where(bulk_flag, 15.0, 1.0)
    weight = weight * np.where(bulk_flag, 0.35, 1.0)  # retail buyers rarely buy bulk sets
    return Catalogue(
        code=np.array(codes, dtype=object),
        desc=desc,
        family=family,
        price=price,
        price_later=price_later,
        bulk=bulk_flag,
        weight=weight,
        weight_wholesale=weight_wholesale,
    )
