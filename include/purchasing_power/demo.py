"""Seeded generator of a realistic demo transaction file in the UCI "Online Retail" schema.

The demo source lets the whole pipeline run without the real data set. It is one Parquet file
with the canonical columns and dtypes of UCI Online Retail::

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

CLI::

    python -m purchasing_power.demo --out PATH [--customers N] [--start YYYY-MM-DD]
        [--end YYYY-MM-DD] [--seed S] [--if-missing]
"""

from __future__ import annotations

import argparse
import functools
import io
import sys
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from purchasing_power.settings import CANONICAL_COLUMNS

__all__ = ["generate_demo_transactions", "write_demo_source", "main", "DEMO_SCHEMA_DTYPES"]

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

_CATALOGUE_SEED = 20101201  # fixed: the shop's catalogue does not depend on the run's seed
_MAX_LINES = 40
_FIRST_INVOICE = 536365

# --------------------------------------------------------------------------------------------
# Vocabulary of the catalogue: families x (colours | designs) x items
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Family:
    name: str
    items: tuple[tuple[str, str, float, float], ...]  # (singular, plural, price lo, price hi)
    colours: tuple[str, ...]
    designs: tuple[str, ...]
    season: tuple[float, ...]  # product-choice factor by month (Jan..Dec)


_FLAT = (1.0,) * 12

_FAMILIES: tuple[_Family, ...] = (
    _Family(
        "christmas",
        (
            ("CHRISTMAS TREE DECORATION", "CHRISTMAS TREE DECORATIONS", 0.42, 1.65),
            ("BAUBLE", "BAUBLES", 0.65, 2.95),
            ("CHRISTMAS CRACKER", "CHRISTMAS CRACKERS", 1.25, 4.95),
            ("ADVENT CALENDAR", "ADVENT CALENDARS", 2.95, 8.50),
            ("STAR T-LIGHT HOLDER", "STAR T-LIGHT HOLDERS", 1.25, 3.75),
            ("HANGING ANGEL", "HANGING ANGELS", 0.42, 1.65),
            ("PAPER CHAIN KIT", "PAPER CHAIN KITS", 2.55, 2.95),
            ("CHRISTMAS STOCKING", "CHRISTMAS STOCKINGS", 2.95, 6.75),
            ("DOOR WREATH", "DOOR WREATHS", 4.95, 9.95),
            ("SNOWFLAKE DECORATION", "SNOWFLAKE DECORATIONS", 0.29, 0.85),
        ),
        ("RED", "GOLD", "SILVER", "WHITE", "GREEN"),
        ("50'S CHRISTMAS", "VINTAGE CHRISTMAS", "SCANDINAVIAN", "GINGERBREAD", "REINDEER", "NORDIC",
         "WOODEN", "GLITTER", "FELTCRAFT"),
        (0.15, 0.05, 0.05, 0.05, 0.1, 0.2, 0.4, 0.7, 1.4, 2.4, 3.0, 1.4),
    ),
    _Family(
        "party",
        (
            ("CAKE CASE", "CAKE CASES", 0.42, 0.55),
            ("PAPER PLATE", "PAPER PLATES", 0.85, 1.65),
            ("PARTY NAPKIN", "PARTY NAPKINS", 0.85, 0.85),
            ("PARTY BALLOON", "PARTY BALLOONS", 0.65, 1.25),
            ("PARTY HAT", "PARTY HATS", 0.39, 0.85),
            ("PARTY BAG", "PARTY BAGS", 0.29, 0.42),
            ("BIRTHDAY CANDLE", "BIRTHDAY CANDLES", 0.39, 1.25),
            ("CAKE STAND", "CAKE STANDS", 4.95, 12.75),
            ("PARTY INVITE", "PARTY INVITES", 0.85, 1.25),
            ("PARTY BUNTING", "PARTY BUNTINGS", 3.75, 4.95),
            ("PAPER CUP", "PAPER CUPS", 0.65, 0.85),
        ),
        ("PINK", "BLUE", "RED", "YELLOW", "GREEN"),
        ("RED RETROSPOT", "SPACEBOY", "DOLLY GIRL", "PAISLEY PARK", "PANTRY", "VINTAGE DOILY",
         "WOODLAND", "POLKA DOT", "CIRCUS PARADE", "PIRATE"),
        (0.6, 0.8, 0.9, 1.0, 1.0, 1.1, 1.1, 1.0, 1.0, 1.1, 1.4, 1.2),
    ),
    _Family(
        "kitchen",
        (
            ("LUNCH BOX", "LUNCH BOXES", 1.65, 2.95),
            ("TEA TOWEL", "TEA TOWELS", 1.25, 2.95),
            ("OVEN GLOVE", "OVEN GLOVES", 1.45, 2.95),
            ("APRON", "APRONS", 3.75, 4.95),
            ("CAKE TIN", "CAKE TINS", 4.25, 12.75),
            ("MUG", "MUGS", 1.25, 2.55),
            ("TEACUP AND SAUCER", "TEACUPS AND SAUCERS", 2.95, 3.25),
            ("BISCUIT TIN", "BISCUIT TINS", 3.75, 7.95),
            ("CHOPPING BOARD", "CHOPPING BOARDS", 2.95, 5.95),
            ("RECIPE BOX", "RECIPE BOXES", 2.95, 4.95),
            ("EGG CUP", "EGG CUPS", 0.42, 1.25),
            ("MEASURING SPOONS", "MEASURING SPOONS", 1.65, 2.10),
            ("TEAPOT", "TEAPOTS", 4.95, 9.95),
            ("BREAD BIN", "BREAD BINS", 8.50, 16.95),
            ("JAM JAR", "JAM JARS", 0.85, 1.65),
        ),
        ("WHITE", "CREAM", "PINK", "BLUE", "GREEN", "RED", "IVORY"),
        ("REGENCY", "RED RETROSPOT", "VINTAGE LEAF", "APPLES", "STRAWBERRY", "PANTRY", "FRENCH BLUE",
         "ROSE DU SUD", "GINGHAM", "SWEETHEART", "VINTAGE DOILY", "ENAMEL"),
        _FLAT,
    ),
    _Family(
        "home",
        (
            ("HANGING HEART T-LIGHT HOLDER", "HANGING HEART T-LIGHT HOLDERS", 2.55, 2.95),
            ("METAL LANTERN", "METAL LANTERNS", 3.39, 4.95),
            ("PHOTO FRAME", "PHOTO FRAMES", 1.65, 6.75),
            ("CUSHION COVER", "CUSHION COVERS", 3.75, 5.95),
            ("DOORSTOP", "DOORSTOPS", 4.25, 6.75),
            ("COAT HANGER", "COAT HANGERS", 1.65, 2.75),
            ("WALL CLOCK", "WALL CLOCKS", 5.95, 8.50),
            ("STORAGE BOX", "STORAGE BOXES", 1.95, 6.35),
            ("CANDLE HOLDER", "CANDLE HOLDERS", 1.25, 3.75),
            ("WALL MIRROR", "WALL MIRRORS", 4.95, 14.95),
            ("DRAWER KNOB", "DRAWER KNOBS", 1.25, 1.65),
            ("DOORMAT", "DOORMATS", 6.75, 8.50),
            ("METAL SIGN", "METAL SIGNS", 1.65, 2.95),
            ("PAPER LAMPSHADE", "PAPER LAMPSHADES", 2.95, 4.95),
        ),
        ("WHITE", "CREAM", "RED", "PINK", "BLACK", "ANTIQUE SILVER", "IVORY"),
        ("HEART", "SWEETHEART", "VINTAGE", "FRENCH STYLE", "MOROCCAN", "BAROQUE", "BIRD",
         "PARISIENNE", "CHERRY BLOSSOM", "ENCHANTED FOREST", "WICKER"),
        (0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.05, 1.1, 1.1, 0.9),
    ),
    _Family(
        "garden",
        (
            ("WATERING CAN", "WATERING CANS", 1.25, 4.95),
            ("BIRD FEEDER", "BIRD FEEDERS", 1.65, 3.75),
            ("PLANT POT", "PLANT POTS", 0.85, 2.95),
            ("GARDEN KNEELER", "GARDEN KNEELERS", 2.95, 3.75),
            ("HERB MARKER", "HERB MARKERS", 0.65, 0.65),
            ("BIRD HOUSE", "BIRD HOUSES", 3.75, 5.95),
            ("GARDEN GLOVES", "GARDEN GLOVES", 1.95, 2.55),
            ("HANGING PLANTER", "HANGING PLANTERS", 2.10, 4.25),
            ("WIND CHIME", "WIND CHIMES", 1.65, 3.75),
        ),
        ("GREEN", "BLUE", "CREAM", "ZINC", "RED"),
        ("VINTAGE", "GARDENERS", "ENGLISH ROSE", "BUTTERFLY", "BLUE FLOWERS", "WIRE", "ENAMEL",
         "COTTAGE GARDEN"),
        (0.4, 0.6, 1.3, 1.7, 1.8, 1.6, 1.3, 1.0, 0.7, 0.5, 0.4, 0.4),
    ),
    _Family(
        "stationery",
        (
            ("NOTEBOOK", "NOTEBOOKS", 0.85, 1.65),
            ("GIFT WRAP", "GIFT WRAPS", 0.42, 0.42),
            ("GREETING CARD", "GREETING CARDS", 0.42, 0.42),
            ("PENCIL", "PENCILS", 0.21, 0.29),
            ("STICKER SHEET", "STICKER SHEETS", 0.85, 0.85),
            ("GIFT TAG", "GIFT TAGS", 0.85, 1.25),
            ("MEMO BOARD", "MEMO BOARDS", 4.95, 7.95),
            ("PHOTO ALBUM", "PHOTO ALBUMS", 3.75, 6.35),
            ("ENVELOPE", "ENVELOPES", 0.85, 0.85),
            ("ERASER", "ERASERS", 0.19, 0.39),
            ("GIFT BAG LARGE", "GIFT BAGS LARGE", 0.42, 0.83),
        ),
        ("PINK", "BLUE", "GREEN", "RED", "PURPLE"),
        ("RED RETROSPOT", "VINTAGE PAISLEY", "DOLLY GIRL", "SPACEBOY", "WOODLAND", "LONDON",
         "BIRDS", "VINTAGE CARAVAN", "ROSES"),
        (0.8, 1.3, 1.0, 0.9, 0.9, 0.9, 0.9, 1.0, 1.1, 1.1, 1.2, 1.1),
    ),
    _Family(
        "bags",
        (
            ("JUMBO BAG", "JUMBO BAGS", 1.65, 2.08),
            ("LUNCH BAG", "LUNCH BAGS", 1.45, 1.65),
            ("SHOPPER BAG", "SHOPPER BAGS", 2.10, 2.55),
            ("CHARLOTTE BAG", "CHARLOTTE BAGS", 0.72, 0.85),
            ("PURSE", "PURSES", 1.25, 2.95),
            ("TOTE BAG", "TOTE BAGS", 1.25, 2.10),
            ("WASHBAG", "WASHBAGS", 2.55, 3.75),
            ("SHOULDER BAG", "SHOULDER BAGS", 4.25, 8.50),
        ),
        ("PINK", "RED", "BLUE", "BLACK", "IVORY"),
        ("RED RETROSPOT", "VINTAGE PAISLEY", "PINK POLKADOT", "SPACEBOY", "DOLLY GIRL",
         "STRAWBERRY", "APPLES", "BAROQUE", "SCANDINAVIAN", "SUKI", "WOODLAND", "SKULLS"),
        _FLAT,
    ),
    _Family(
        "toys",
        (
            ("SKIPPING ROPE", "SKIPPING ROPES", 1.25, 1.45),
            ("PLAYING CARDS", "PLAYING CARDS", 1.25, 1.25),
            ("HELICOPTER", "HELICOPTERS", 0.72, 0.85),
            ("JIGSAW", "JIGSAWS", 0.85, 2.95),
            ("SPINNING TOP", "SPINNING TOPS", 0.29, 0.85),
            ("DOMINOES", "DOMINOES", 1.25, 1.45),
            ("SNAKES AND LADDERS GAME", "SNAKES AND LADDERS GAMES", 2.95, 3.75),
            ("TOY TIDY", "TOY TIDIES", 2.10, 2.10),
            ("CHILDRENS TEA SET", "CHILDRENS TEA SETS", 4.95, 7.95),
            ("NESTING BOXES", "NESTING BOXES", 7.65, 8.50),
            ("CATCH CUP GAME", "CATCH CUP GAMES", 0.85, 1.25),
        ),
        ("PINK", "BLUE", "RED", "YELLOW", "GREEN"),
        ("SPACEBOY", "DOLLY GIRL", "CIRCUS PARADE", "WOODEN", "RETRO", "VINTAGE", "DINOSAUR",
         "PIRATE", "BABUSHKA"),
        (0.8, 0.8, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.4, 1.2),
    ),
    _Family(
        "warmers",
        (
            ("HOT WATER BOTTLE", "HOT WATER BOTTLES", 3.75, 4.95),
            ("HAND WARMER", "HAND WARMERS", 1.65, 2.10),
            ("BATHROOM SET", "BATHROOM SETS", 4.95, 9.95),
            ("SOAP DISH", "SOAP DISHES", 1.25, 2.55),
            ("TOOTHBRUSH HOLDER", "TOOTHBRUSH HOLDERS", 1.25, 2.10),
            ("SCENTED CANDLE", "SCENTED CANDLES", 1.25, 2.95),
            ("FRAGRANCE OILS", "FRAGRANCE OILS", 0.85, 0.85),
            ("BATH SPONGE", "BATH SPONGES", 0.85, 1.25),
        ),
        ("RED", "PINK", "CREAM", "CHOCOLATE", "BLUE"),
        ("UNION JACK", "RED RETROSPOT", "OWL", "BIRD", "SCOTTIE DOG", "KNITTED", "LOVE",
         "HEART OF WICKER"),
        (1.8, 1.4, 1.0, 0.7, 0.5, 0.4, 0.4, 0.5, 0.8, 1.3, 1.7, 1.6),
    ),
    _Family(
        "jewellery",
        (
            ("NECKLACE", "NECKLACES", 1.25, 6.35),
            ("BRACELET", "BRACELETS", 1.25, 4.25),
            ("EARRINGS", "EARRINGS", 0.85, 2.55),
            ("KEY RING", "KEY RINGS", 0.39, 1.25),
            ("HAIR CLIP", "HAIR CLIPS", 0.29, 0.85),
            ("BROOCH", "BROOCHES", 0.85, 2.95),
            ("HAIRBAND", "HAIRBANDS", 0.42, 0.85),
        ),
        ("PINK", "BLUE", "BLACK", "PURPLE", "GREEN", "IVORY", "AMBER"),
        ("DIAMANTE", "CRYSTAL", "GLASS BEAD", "SILVER", "ART DECO", "FLOWER", "BUTTERFLY",
         "MONTANA", "VINTAGE BEAD"),
        (0.8, 1.4, 1.0, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.2, 1.1),
    ),
)
_N_FAM = len(_FAMILIES)
_PRODUCTS_PER_FAMILY = 34  # plus up to 6 bulk "SET OF n" items: ~400 products in all

#: Price points the shop uses; every price is snapped to the nearest one (in log space).
_PRICE_POINTS = np.array(
    [0.12, 0.19, 0.21, 0.29, 0.36, 0.39, 0.42, 0.55, 0.65, 0.72, 0.79, 0.83, 0.85, 0.95, 1.06,
     1.25, 1.45, 1.65, 1.69, 1.95, 2.08, 2.10, 2.46, 2.55, 2.95, 3.25, 3.39, 3.75, 4.15, 4.25,
     4.95, 5.45, 5.95, 6.35, 6.75, 7.65, 7.95, 8.50, 8.95, 9.95, 10.95, 12.75, 14.95, 16.95,
     18.95, 24.95, 29.95, 34.95, 39.95, 49.95, 59.95, 79.95]
)
_LOG_PP = np.log(_PRICE_POINTS)
_PP_MID = (_LOG_PP[1:] + _LOG_PP[:-1]) / 2


def _snap(prices: np.ndarray) -> np.ndarray:
    """Nearest shop price point (log scale)."""
    return _PRICE_POINTS[np.searchsorted(_PP_MID, np.log(np.maximum(prices, 1e-3)))]


@dataclass(frozen=True)
class _Catalogue:
    code: np.ndarray  # object: StockCode
    desc: np.ndarray  # object: Description
    family: np.ndarray  # int
    price: np.ndarray  # float list price (first half of the period)
    price_later: np.ndarray  # float list price (second half)
    bulk: np.ndarray  # bool: "SET OF n" items
    weight: np.ndarray  # float popularity
    weight_wholesale: np.ndarray  # float popularity for wholesalers (bulk boosted)


@functools.lru_cache(maxsize=1)
def _catalogue() -> _Catalogue:
    rng = np.random.default_rng(_CATALOGUE_SEED)
    rows: list[tuple[str, int, float, bool, str]] = []  # (desc, family, price, bulk, variant key)
    for fi, fam in enumerate(_FAMILIES):
        item_price = {it[0]: float(_snap(np.array([np.exp(rng.uniform(np.log(it[2]), np.log(it[3])))]))[0])
                      for it in fam.items}
        plain: list[tuple[str, float, str]] = []
        for singular, _plural, _lo, _hi in fam.items:
            p = item_price[singular]
            for colour in fam.colours:
                plain.append((f"{colour} {singular}", p, f"{fi}:{singular}"))
            for design in fam.designs:
                dp = float(_snap(np.array([p * rng.uniform(0.9, 1.15)]))[0])
                plain.append((f"{singular} {design}", dp, f"{fi}:{singular}:{design}"))
                plain.append((f"{design} {singular}", dp, f"{fi}:{design}:{singular}"))
        bulk: list[tuple[str, float, str]] = []
        for singular, plural, lo, _hi in fam.items:
            if lo > 1.5:
                continue
            for n in (3, 6, 12):
                for design in fam.designs:
                    price = float(_snap(np.array([item_price[singular] * n * 0.6]))[0])
                    bulk.append((f"SET OF {n} {plural} {design}", price, f"{fi}:set{n}:{singular}:{design}"))
        pick = rng.choice(len(plain), size=min(_PRODUCTS_PER_FAMILY, len(plain)), replace=False)
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
    idx = np.searchsorted(_PRICE_POINTS, price) + 1
    price_later = np.where(rise, _PRICE_POINTS[np.minimum(idx, len(_PRICE_POINTS) - 1)], price)
    # Zipf-like popularity within each family, random ranks
    weight = np.empty(n)
    for fi in range(_N_FAM):
        m = np.flatnonzero(family == fi)
        ranks = rng.permutation(len(m)) + 1
        weight[m] = 1.0 / ranks**0.5
    weight_wholesale = weight * np.where(bulk_flag, 15.0, 1.0)
    weight = weight * np.where(bulk_flag, 0.35, 1.0)  # retail buyers rarely buy bulk sets
    return _Catalogue(
        code=np.array(codes, dtype=object),
        desc=desc,
        family=family,
        price=price,
        price_later=price_later,
        bulk=bulk_flag,
        weight=weight,
        weight_wholesale=weight_wholesale,
    )


# --------------------------------------------------------------------------------------------
# Segments, calendar, countries
# --------------------------------------------------------------------------------------------

_SEGMENTS = ("home", "party", "gift", "wholesale")
_WHOLESALE = 3
_GUEST = 4  # row index of the guests' preferences / calendar
_SEG_SHARE = np.array([0.38, 0.24, 0.32, 0.06])
_SEG_R = np.array([1.1, 0.9, 0.7, 2.0])  # Gamma shape of the purchase rate
_SEG_ALPHA = np.array([55.0, 75.0, 70.0, 22.0])  # Gamma scale parameter alpha (days): E[lambda] = r/alpha
_SEG_A = np.array([1.0, 1.3, 1.5, 0.8])  # Beta(a, b) dropout probability
_SEG_B = np.array([7.0, 3.2, 3.5, 9.0])
_SEG_MOV = np.array([150.0, 190.0, 120.0, 1100.0])  # median of the customer's mean order value
_SEG_FOREIGN = np.array([0.08, 0.08, 0.08, 0.30])
#: Typical value of one invoice line (GBP) by segment (retail / wholesale quantities).
_SEG_LINE_VALUE = np.array([13.0, 11.0, 11.0, 75.0, 12.0])

#: Family preferences (rows: home, party, gift, wholesale, guest; columns: _FAMILIES order).
_FAM_PREF = np.array(
    [
        # xmas party kitchen home garden stat  bags  toys  warm  jewel
        [0.5, 0.4, 5.0, 5.0, 2.5, 0.7, 1.0, 0.4, 1.5, 0.3],
        [5.0, 5.0, 0.6, 0.7, 0.2, 1.5, 0.8, 1.5, 0.5, 0.3],
        [1.0, 1.0, 1.0, 1.5, 0.8, 3.0, 3.0, 2.0, 2.0, 3.0],
        [2.0, 2.0, 2.5, 2.5, 1.0, 1.5, 2.5, 1.5, 1.0, 0.5],
        [1.5, 1.5, 2.0, 2.5, 1.0, 1.5, 1.5, 1.2, 1.0, 1.0],
    ]
)

#: Purchase-rate seasonality by segment (rows as _FAM_PREF; Jan..Dec).
_SEASON = np.array(
    [
        [0.80, 0.85, 1.00, 0.95, 1.00, 1.00, 0.95, 0.95, 1.05, 1.10, 1.25, 0.90],
        [0.35, 0.45, 0.60, 0.60, 0.70, 0.75, 0.70, 0.70, 1.20, 1.80, 2.80, 1.30],
        [0.60, 0.90, 0.90, 0.85, 0.90, 0.85, 0.85, 0.90, 1.15, 1.35, 1.80, 1.20],
        [0.70, 0.80, 1.00, 0.90, 1.00, 1.00, 1.00, 1.05, 1.30, 1.40, 1.50, 0.80],
        [0.65, 0.75, 0.95, 0.85, 0.95, 0.95, 0.95, 0.95, 1.25, 1.35, 1.75, 1.10],
    ]
)
_WEEKDAY = np.array([1.0, 1.05, 1.0, 1.1, 0.85, 0.02, 0.65])  # Mon..Sun
#: Invoice hour 07..20 (mid-day peak, as in a UK wholesaler's web shop).
_HOURS = np.arange(7, 21)
_HOUR_W = np.array([0.4, 9, 34, 49, 58, 79, 72, 67, 78, 55, 28, 8, 4, 1.0])

_COUNTRIES = np.array(
    ["Germany", "France", "EIRE", "Spain", "Netherlands", "Belgium", "Switzerland", "Portugal",
     "Australia", "Norway", "Italy", "Channel Islands", "Finland", "Cyprus", "Sweden", "Austria",
     "Denmark", "Poland", "Japan", "USA", "Israel", "Iceland"],
    dtype=object,
)
_COUNTRY_W = np.array(
    [22, 20, 18, 7, 6, 5, 5, 4, 3, 3, 2.5, 2.5, 2, 1.5, 1.5, 1.2, 1, 0.8, 0.8, 0.6, 0.5, 0.3]
)
#: Postage price (GBP) for each foreign country: Europe 15/18, far away 28/40.
_COUNTRY_POSTAGE = np.array(
    [18, 18, 15, 28, 15, 15, 18, 28, 40, 40, 28, 15, 40, 40, 40, 40, 28, 40, 40, 40, 40, 40],
    dtype=np.float64,
)

_RETAIL_QTY = np.array([1, 2, 3, 4, 6, 8, 10, 12, 24, 48])
_RETAIL_QTY_P = np.array([0.26, 0.16, 0.08, 0.09, 0.14, 0.04, 0.05, 0.11, 0.05, 0.02])
_WHOLESALE_QTY = np.array([6, 12, 24, 36, 48, 72, 96, 100, 144, 288])
_WHOLESALE_QTY_P = np.array([0.08, 0.20, 0.20, 0.10, 0.12, 0.08, 0.08, 0.04, 0.07, 0.03])

_ADJUST_TEXT = np.array(["damaged", "check", "?", "wet damaged", "missing", "lost", "thrown away",
                         "smashed", "found", "counted"], dtype=object)


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


def _sample_products(rng: np.random.Generator, cat: _Catalogue, fam_probs: np.ndarray,
                     wholesale: np.ndarray) -> np.ndarray:
    """Product index per row: a family from ``fam_probs`` rows, then a product by popularity."""
    fam = _categorical(rng, fam_probs)
    u = rng.random(len(fam))
    prod = np.empty(len(fam), dtype=np.int64)
    for fi in range(_N_FAM):
        members = np.flatnonzero(cat.family == fi)
        for flag, weights in ((False, cat.weight), (True, cat.weight_wholesale)):
            m = (fam == fi) & (wholesale == flag)
            if not m.any():
                continue
            cum = np.cumsum(weights[members])
            j = np.searchsorted(cum, u[m] * cum[-1], side="right")
            prod[m] = members[np.minimum(j, len(members) - 1)]
    return prod


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


def generate_demo_transactions(
    n_customers: int = 2500,
    start: date = date(2023, 1, 1),
    end: date = date(2024, 12, 31),
    seed: int = 7,
) -> pd.DataFrame:
    """Generate the demo transactions (canonical UCI Online Retail columns and dtypes).

    Deterministic for the same arguments. See the module docstring for the generative process.
    """
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
    cat = _catalogue()
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
    fam_season = np.array([f.season for f in _FAMILIES])  # (families, 12)
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
    price = np.where(tier, _snap(list_price * 0.85), price)
    markup = (l_cust < 0) & (rng.random(n_l) < 0.6)
    price = np.where(markup, _snap(list_price * rng.uniform(1.12, 1.3, n_l)), price)
    manual = rng.random(n_l) < 0.015
    price = np.where(manual, _snap(list_price * rng.uniform(0.85, 1.15, n_l)), price)

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


# --------------------------------------------------------------------------------------------
# Writing and CLI
# --------------------------------------------------------------------------------------------


def _arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("InvoiceNo", pa.large_string()),
            ("StockCode", pa.large_string()),
            ("Description", pa.large_string()),
            ("Quantity", pa.int64()),
            ("InvoiceDate", pa.timestamp("us")),
            ("UnitPrice", pa.float64()),
            ("CustomerID", pa.float64()),
            ("Country", pa.large_string()),
        ]
    )


def to_parquet_bytes(df: pd.DataFrame) -> bytes:
    """Serialise a canonical frame to Parquet (zstd) with the real file's Arrow schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, schema=_arrow_schema(), preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_demo_source(path: str, **kwargs: Any) -> str:
    """Generate the demo transactions and write them atomically as Parquet to ``path``.

    ``path`` is a local path or an fsspec URI; ``kwargs`` go to :func:`generate_demo_transactions`.
    Returns ``path``.
    """
    from purchasing_power.storage import atomic_write_bytes

    data = to_parquet_bytes(generate_demo_transactions(**kwargs))
    atomic_write_bytes(path, data)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m purchasing_power.demo",
        description="Write the seeded demo transaction file (UCI Online Retail schema, Parquet).",
    )
    parser.add_argument("--out", default=None,
                        help="target path or fsspec URI (default: the demo source under the storage root)")
    parser.add_argument("--customers", type=int, default=2500, help="number of customers (default 2500)")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2023, 1, 1), help="first day, YYYY-MM-DD")
    parser.add_argument("--end", type=date.fromisoformat, default=date(2024, 12, 31), help="last day, YYYY-MM-DD")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--if-missing", action="store_true", help="do nothing when the file already exists")
    args = parser.parse_args(argv)

    out = args.out
    if not out:
        from purchasing_power.settings import default_demo_source

        out = default_demo_source()
    if args.if_missing:
        from purchasing_power.storage import filesystem_for

        if filesystem_for(out).exists(out):
            print(f"demo source exists, left as is: {out}")
            return 0
    try:
        df = generate_demo_transactions(n_customers=args.customers, start=args.start, end=args.end, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    from purchasing_power.storage import atomic_write_bytes

    atomic_write_bytes(out, to_parquet_bytes(df))
    print(
        f"wrote {len(df):,} rows, {df['InvoiceNo'].nunique():,} invoices, "
        f"{df['CustomerID'].nunique():,} customers, {df['InvoiceDate'].min()} .. {df['InvoiceDate'].max()} to {out}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
