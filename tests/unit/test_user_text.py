"""User-written text as a second source: settings, extraction and cleaning (quarantine reasons,
truncation, Unicode), point-in-time features, the embed plan, the demo's reviews, and a whole run
that publishes with user-text features."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from purchasing_power.schemas import TEXT_MAX_CHARS, USER_TEXT_PREFIX
from purchasing_power.settings import CONF_KEYS, Settings
from purchasing_power.storage import TEXTS_QUARANTINE_FILE, Storage, Workspace
from purchasing_power.usertext import NO_TEXT_DAYS, clean_texts_frame, normalise_text_dtypes, user_text_features

DAY = date(2011, 8, 31)

#: CustomerID, TextDate, Text, and what clean must do with the row (None: clean).
TEXT_ROWS = [
    (17850.0, "2011-08-30T09:00:00Z", "Ｇｒｅａｔ\u200bvalue,\t\twill  order again ", None),
    (13047.0, "2011-08-31 10:00:00", "Trop cher, déçu", None),
    (13047.0, "2011-08-31 12:00:00", "x" * (TEXT_MAX_CHARS + 500), None),  # truncated
    (17850.0, "2011-08-31 13:00:00", " \t\u200b\u0007 ", "empty_text"),
    (17850.0, "2011-08-31 14:00:00", None, "empty_text"),
    (None, "2011-08-31 15:00:00", "no customer", "missing_customer"),
    (-3.0, "2011-08-31 16:00:00", "negative id", "invalid_customer"),
    (12.5, "2011-08-31 17:00:00", "fractional id", "invalid_customer"),
    (13047.0, "someday", "no date", "unparseable_date"),
]


def _texts_frame(rows=TEXT_ROWS) -> pd.DataFrame:
    return pd.DataFrame([r[:3] for r in rows], columns=["CustomerID", "TextDate", "Text"])


def _with_texts(settings_factory, tmp_path, frame: pd.DataFrame | None = None, **kw) -> Settings:
    path = tmp_path / "source" / "texts.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    (_texts_frame() if frame is None else frame).to_parquet(path, index=False)
    return settings_factory(texts=str(path), **kw)


# -- settings ------------------------------------------------------------------------------------
def test_texts_settings_are_params_and_part_of_the_source_id(tmp_path):
    assert {"texts", "texts_column_map"} <= set(CONF_KEYS)
    base = Settings(storage=str(tmp_path), source="/s.parquet")
    assert base.resolved_texts == ""  # an explicit source without texts: no user text
    with_texts = base.with_conf({"texts": "/t.csv", "texts_column_map": '{"body": "Text"}'})
    assert with_texts.texts_column_map == {"body": "Text"}
    assert with_texts.source_id != base.source_id  # derived history never mixes texts sources
    assert with_texts.with_conf({"texts": "/other.csv"}).source_id != with_texts.source_id
    demo = Settings(storage=str(tmp_path))
    assert demo.resolved_texts == f"{tmp_path}/demo/ds=2024-12-31/texts.parquet"  # beside the demo transactions
    env = Settings.from_env({"PURCHASING_POWER_TEXTS": "/e.parquet", "PURCHASING_POWER_TEXTS_COLUMN_MAP": '{"who": "CustomerID"}'})
    assert env.texts == "/e.parquet" and env.texts_column_map == {"who": "CustomerID"}
    with pytest.raises(ValueError, match="texts_column_map"):
        base.with_conf({"texts_column_map": {"body": "Description"}})
    assert base.with_overrides(use_user_text="false").use_user_text is False


# -- clean ---------------------------------------------------------------------------------------
def test_clean_quarantines_with_reasons_truncates_and_normalises_unicode():
    raw = normalise_text_dtypes(_texts_frame())
    clean, quarantine, truncated = clean_texts_frame(raw)
    assert len(clean) + len(quarantine) == len(raw)
    expected = [r[3] for r in TEXT_ROWS if r[3]]
    assert sorted(quarantine["reason"]) == sorted(expected)
    assert truncated == 1
    texts = clean.set_index("text_ts")["text"]
    # NFKC (full-width letters), zero-width and control characters, whitespace runs; case kept
    assert texts[pd.Timestamp("2011-08-30 09:00")] == "Great value, will order again"
    assert texts[pd.Timestamp("2011-08-31 10:00")] == "Trop cher, déçu"
    assert len(texts[pd.Timestamp("2011-08-31 12:00")]) == TEXT_MAX_CHARS
    assert clean["customer_id"].dtype == np.int64
    assert "TextDate=someday" in quarantine.loc[quarantine["reason"] == "unparseable_date", "detail"].iloc[0]


def test_text_customer_ids_are_kept_as_spelled():
    frame = pd.DataFrame({"CustomerID": ["C-001", " 00042 ", ""], "TextDate": ["2024-01-01"] * 3, "Text": ["a", "b", "c"]})
    clean, quarantine, _ = clean_texts_frame(normalise_text_dtypes(frame))
    assert list(clean["customer_id"]) == ["00042", "C-001"]
    assert list(quarantine["reason"]) == ["missing_customer"]


# -- extract + clean stages ----------------------------------------------------------------------
def test_extract_and_clean_write_text_partitions_quarantine_and_rerun_the_same(settings_factory, tmp_path):
    from purchasing_power.stages.clean import clean_day
    from purchasing_power.stages.extract import extract_day

    settings = _with_texts(settings_factory, tmp_path)
    ext = extract_day(settings, DAY)["texts"]
    assert ext["rows_in_source"] == len(TEXT_ROWS) and ext["partitions_written"] == 2  # 08-30 and 08-31
    assert ext["rows_undated_of_day"] == 1
    report = clean_day(settings, DAY)["texts"]
    assert report["totals"] == {"read": 9, "clean": 3, "quarantined": 6, "truncated": 1}
    assert report["run_day"]["quarantine_reasons"] == {"empty_text": 2, "invalid_customer": 2, "missing_customer": 1, "unparseable_date": 1}
    ws = Workspace.for_settings(settings)
    q_path = ws.root.path("quarantine", DAY, TEXTS_QUARANTINE_FILE)
    clean_path = ws.per_source.path("texts_clean", DAY, "texts.parquet")
    before = (Path(q_path).read_bytes(), Path(clean_path).read_bytes())
    assert Path(ws.root.path("quarantine", DAY, "quarantine.parquet")).exists()  # the transactions' own, apart

    # a rerun overwrites with the same bytes; the undated text stays quarantined on its first day only
    extract_day(settings, DAY)
    clean_day(settings, DAY)
    assert (Path(q_path).read_bytes(), Path(clean_path).read_bytes()) == before
    nxt = date(2011, 9, 1)
    extract_day(settings, nxt)
    assert clean_day(settings, nxt)["texts"]["run_day"]["quarantined"] == 0

    # a changed texts source: only the day whose texts changed is extracted again
    changed = _texts_frame()
    changed.loc[0, "Text"] = "changed my mind"
    changed.to_parquet(settings.texts, index=False)
    again = extract_day(settings, nxt)["texts"]
    assert again["history_rewritten"] == ["2011-08-30"]
    cleaned = clean_day(settings, nxt)["texts"]
    assert cleaned["history_changed"] == ["2011-08-30"]


def test_no_texts_source_means_no_text_partitions(settings_factory):
    from purchasing_power.stages.clean import clean_day
    from purchasing_power.stages.extract import extract_day

    settings = settings_factory()
    assert "texts" not in extract_day(settings, DAY) and "texts" not in clean_day(settings, DAY)
    assert not Path(Workspace.for_settings(settings).per_source.path("texts_raw")).exists()


# -- features ------------------------------------------------------------------------------------
def _fake_vectors(texts: list[str]) -> np.ndarray:
    return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32).reshape(len(texts), 3)


def test_user_text_features_are_point_in_time():
    customers = pd.Index([1, 2, 3], name="customer_id")
    texts = pd.DataFrame(
        {"customer_id": [1, 1, 2], "text_ts": pd.to_datetime(["2024-03-01 10:00", "2024-03-20 23:59", "2024-03-21 00:00"]), "text": ["ab", "abcd", "xyz"]}
    )
    f = user_text_features(texts, date(2024, 3, 20), customers, _fake_vectors, "int64")
    assert list(f["user_texts_n"]) == [2.0, 0.0, 0.0]  # the text at D+1 00:00 is not seen
    assert f.loc[1, "user_text_days_since_last"] == pytest.approx(1 / 1440)
    assert f.loc[2, "user_text_days_since_last"] == NO_TEXT_DAYS and f.loc[3, "user_text_days_since_last"] == NO_TEXT_DAYS
    assert f.loc[1, f"{USER_TEXT_PREFIX}000"] == pytest.approx(3.0)  # mean of len 2 and 4
    assert (f.loc[[2, 3], [f"{USER_TEXT_PREFIX}{i:03d}" for i in range(3)]] == 0).all().all()
    without_later = user_text_features(texts.iloc[:2], date(2024, 3, 20), customers, _fake_vectors, "int64")
    pd.testing.assert_frame_equal(f, without_later)
    # an old text counts, but the mean embedding is of the last 30 days' texts only
    old = pd.DataFrame({"customer_id": [3], "text_ts": pd.to_datetime(["2024-01-01 10:00"]), "text": ["old"]})
    g = user_text_features(pd.concat([texts, old], ignore_index=True), date(2024, 3, 20), customers, _fake_vectors, "int64")
    assert g.loc[3, "user_texts_n"] == 1 and g.loc[3, "user_texts_30d"] == 0 and g.loc[3, f"{USER_TEXT_PREFIX}000"] == 0
    assert g.loc[1, "user_texts_30d"] == 2
    # text ids joined to integer customers through their number; other spellings match nobody
    spelled = texts.assign(customer_id=["1", "1", "x"])
    pd.testing.assert_frame_equal(user_text_features(spelled, date(2024, 3, 20), customers, _fake_vectors, "int64"), f)


def test_build_features_with_user_texts_ignores_texts_after_the_day(settings_factory, tmp_path, tiny_raw, as_raw_partition):
    from purchasing_power.clean import clean_frame
    from purchasing_power.features import build_features

    tx, _ = clean_frame(as_raw_partition(tiny_raw))
    texts = pd.DataFrame({"customer_id": [17850, 13047], "text_ts": pd.to_datetime(["2011-08-31 12:00", "2011-09-01 00:00"]), "text": ["a", "b"]})
    f = build_features(tx, DAY, None, user_texts=(texts, _fake_vectors))
    assert f.loc[17850, "user_texts_n"] == 1 and f.loc[13047, "user_texts_n"] == 0
    assert f.loc[13047, "user_text_days_since_last"] == NO_TEXT_DAYS
    plain = build_features(tx, DAY, None)
    assert not any(c.startswith(USER_TEXT_PREFIX) for c in plain.columns)


def test_model_reduces_each_text_block_on_its_own():
    from purchasing_power.model import feature_columns
    from purchasing_power.pipelines import preprocessor

    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 7)), columns=["a", "txt_000", "txt_001", "utxt_000", "utxt_001", "utxt_002", "user_texts_n"])
    num, text = feature_columns(frame)
    assert num == ["a", "user_texts_n"] and text == ["txt_000", "txt_001", "utxt_000", "utxt_001", "utxt_002"]
    pre = preprocessor(num, text, seed=0, n_rows=40)
    assert [name for name, _, _ in pre.transformers] == ["num", "text", "text_utxt"]


# -- embed plan ----------------------------------------------------------------------------------
def test_embed_plan_includes_only_new_user_texts(settings_factory, tmp_path, monkeypatch):
    from purchasing_power.pipeline import run_embed_plan, run_embed_shard, run_stage

    settings = _with_texts(settings_factory, tmp_path, use_text=False)
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", settings.storage)
    params = {"day": DAY.isoformat(), "source": settings.source, "texts": settings.texts}
    import purchasing_power.pipeline as pipeline

    real = pipeline.settings_for
    monkeypatch.setattr(pipeline, "settings_for", lambda p, extra=None: real(p, {"use_text": False, **(extra or {})}))
    run_stage("extract", params)
    run_stage("clean", params)
    out = Storage.at(settings.storage)
    shards = run_embed_plan(params)
    planned = sorted(t for sh in shards for t in out.read_parquet(sh)["text"])
    # product descriptions are off: only the 3 clean user texts
    assert len(planned) == 3 and "Trop cher, déçu" in planned
    for sh in shards:
        run_embed_shard(sh, params)
    assert run_embed_plan(params) == []  # all embedded: nothing new

    frame = _texts_frame()
    frame.loc[len(frame)] = (13047.0, "2011-08-31 18:00:00", "A brand new review")
    frame.to_parquet(settings.texts, index=False)
    run_stage("extract", params)
    run_stage("clean", params)
    again = run_embed_plan(params)
    assert [t for sh in again for t in out.read_parquet(sh)["text"]] == ["A brand new review"]


# -- demo ----------------------------------------------------------------------------------------
def test_demo_writes_reviews_beside_the_transactions_deterministically(tmp_path):
    from purchasing_power import demo
    from purchasing_power.demo.reviews import INTENT, generate_demo_reviews

    a = demo.write_demo_source(str(tmp_path / "a" / "transactions.parquet"), n_customers=150, seed=3)
    b = demo.write_demo_source(str(tmp_path / "b" / "transactions.parquet"), n_customers=150, seed=3)
    c = demo.write_demo_source(str(tmp_path / "c" / "transactions.parquet"), n_customers=150, seed=4)
    texts = {k: (Path(p).parent / "texts.parquet").read_bytes() for k, p in {"a": a, "b": b, "c": c}.items()}
    assert texts["a"] == texts["b"] and texts["a"] != texts["c"]
    reviews = pd.read_parquet(tmp_path / "a" / "texts.parquet")
    assert list(reviews.columns) == ["CustomerID", "TextDate", "Text"] and len(reviews) > 100

    # the documented synthetic signal: intent phrases mostly from customers who buy again within 30 days
    tx = demo.generate_demo_transactions(n_customers=400, seed=5)
    rev = generate_demo_reviews(tx, seed=5)
    rev = rev[rev["CustomerID"].notna() & pd.to_datetime(rev["TextDate"], errors="coerce", utc=True).notna()]
    ts = pd.to_datetime(rev["TextDate"], utc=True).dt.tz_convert(None)
    buys = tx[tx["CustomerID"].notna() & (tx["Quantity"] > 0)]
    later = [((buys["CustomerID"] == cust) & (buys["InvoiceDate"] > t.normalize() + pd.Timedelta(days=1))
              & (buys["InvoiceDate"] < t.normalize() + pd.Timedelta(days=31))).any() for cust, t in zip(rev["CustomerID"], ts)]
    intent = rev["Text"].isin(INTENT).to_numpy()
    later = np.array(later)
    assert intent[later].mean() > intent[~later].mean() + 0.3


def test_demo_if_missing_adds_texts_to_an_older_demo(tmp_path):
    from purchasing_power import demo

    path = demo.write_demo_source(str(tmp_path / "transactions.parquet"), n_customers=60, seed=2)
    texts = tmp_path / "texts.parquet"
    first = texts.read_bytes()
    texts.unlink()
    assert demo.main(["--out", path, "--if-missing", "--seed", "2"]) == 0
    assert texts.read_bytes() == first


# -- a whole run ---------------------------------------------------------------------------------
def test_run_all_publishes_with_user_text_features(tmp_path, monkeypatch):
    from purchasing_power.demo import write_demo_source
    from purchasing_power.model import load_bundle
    from purchasing_power.pipeline import run_all, settings_for

    day = date(2024, 3, 20)
    src = write_demo_source(str(tmp_path / "src" / "transactions.parquet"), n_customers=120, start=date(2023, 6, 1), end=date(2024, 3, 31), seed=3)
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "data"))
    params = {"source": src, "texts": str(tmp_path / "src" / "texts.parquet")}
    out = run_all(params, day, overrides={"use_text": False})
    assert "publish" in out
    feats = json.loads(Path(out["features"]).read_text())
    assert feats["user_text_columns"] == 384 and feats["text_columns"] == 0
    f = pd.read_parquet(feats["features_path"]).set_index("customer_id")
    assert (f["user_texts_n"] > 0).sum() > 10 and (f["user_texts_n"] == 0).any()
    assert f.loc[f["user_texts_n"] == 0, "user_text_days_since_last"].eq(NO_TEXT_DAYS).all()
    assert (tmp_path / "data" / "predictions" / f"ds={day}" / "predictions.parquet").exists()
    settings = settings_for(params, {"use_text": False})
    training = json.loads(Path(Workspace.for_settings(settings).per_source.path("models", date(2024, 2, 25), "training.json")).read_text())
    assert training["fitted"]
    bundle = load_bundle(Workspace.for_settings(settings).per_source.path("models", date(2024, 2, 25), "candidate.pkl"))
    assert any(c.startswith(USER_TEXT_PREFIX) for c in bundle.purchase.columns) and "user_texts_n" in bundle.purchase.columns

    # the ablation switch: no user-text features, another feature file
    off = run_all(params, day, overrides={"use_text": False, "use_user_text": False})
    off_feats = json.loads(Path(off["features"]).read_text())
    assert off_feats["user_text_columns"] == 0 and off_feats["features_path"] != feats["features_path"]
