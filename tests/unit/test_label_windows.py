"""Labels read only their windows: ``RunData.history_since(since, through)`` gives the clean rows
of those days from those partitions alone, the evaluation and the training tables read the lines
after their first as-of day only, and customers are counted a partition at a time."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

DAY = date(2024, 3, 20)
LABEL_COLUMNS = ["customer_id", "invoice_ts", "line_value"]


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory) -> tuple[str, dict]:
    """Storage with the clean history of a demo source through DAY (a year and a half)."""
    import os

    from purchasing_power.demo import write_demo_source
    from purchasing_power.pipeline import run_stage

    root = tmp_path_factory.mktemp("labels")
    source = write_demo_source(str(root / "transactions.parquet"), n_customers=150, start=date(2022, 10, 1),
                               end=date(2024, 3, 31), seed=11)
    storage = str(root / "s")
    params = {"source": source, "day": DAY.isoformat()}
    old = os.environ.get("PURCHASING_POWER_STORAGE")
    os.environ["PURCHASING_POWER_STORAGE"] = storage
    try:
        for stage in ("extract", "clean"):
            run_stage(stage, params, overrides={"use_text": False})
    finally:
        if old is None:
            os.environ.pop("PURCHASING_POWER_STORAGE")
        else:
            os.environ["PURCHASING_POWER_STORAGE"] = old
    return storage, params


@pytest.fixture()
def data_for(cleaned, monkeypatch):
    from purchasing_power.history import RunData
    from purchasing_power.pipeline import settings_for

    storage, params = cleaned
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", storage)

    def make(**over):
        return RunData.load(settings_for(params, {"use_text": False, **over}), DAY)

    return make


@pytest.fixture()
def reads(monkeypatch):
    """The (days, columns) of every multi-file read of the clean partitions."""
    from purchasing_power.storage import Storage

    seen: list[tuple[list[date], list[str] | None]] = []
    real = Storage.read_parquet_many

    def spy(self, paths, columns=None, dictionary=None):
        days = [date.fromisoformat(p.split("ds=")[1][:10]) for p in paths if "/clean/" in p]
        if days:
            seen.append((days, columns))
        return real(self, paths, columns, dictionary)

    monkeypatch.setattr(Storage, "read_parquet_many", spy)
    return seen


def test_history_since_reads_only_its_days_and_equals_the_cut_history(data_for, reads):
    from purchasing_power.history import load_clean_history

    data = data_for()
    full = load_clean_history(data.settings, DAY)
    reads.clear()
    since, through = date(2023, 11, 2), date(2024, 2, 10)
    got = data.history_since(since, through)
    ts = full["invoice_ts"]
    want = full[(ts >= pd.Timestamp(since)) & (ts < pd.Timestamp(through) + pd.Timedelta(days=1))][LABEL_COLUMNS]
    assert 0 < len(got) < len(full)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    [(days, columns)] = reads
    assert min(days) == since and max(days) == through and columns == LABEL_COLUMNS
    assert len(data.history_since(since)) == (ts >= pd.Timestamp(since)).sum()  # through the run's day by default
    assert data.history_since(DAY + timedelta(days=1)).empty  # no partition in the range: no rows, no error
    # a loaded history serves instead of a read
    loaded = data_for()
    loaded.feature_history()
    reads.clear()
    pd.testing.assert_frame_equal(loaded.history_since(since, through)[LABEL_COLUMNS].reset_index(drop=True),
                                  want.reset_index(drop=True), check_dtype=False, check_categorical=False)
    assert reads == []


@pytest.mark.parametrize("lookback", [0, 365])
def test_customers_are_counted_a_partition_at_a_time_as_in_memory(data_for, lookback):
    from purchasing_power.compact import sale_lines
    from purchasing_power.features import lookback_since
    from purchasing_power.history import load_clean_history

    data = data_for(feature_lookback_days=lookback)
    tx = load_clean_history(data.settings, DAY)
    for as_of in (date(2023, 6, 30), date(2024, 1, 15), DAY):
        sold = sale_lines(tx) & (tx["invoice_ts"] < pd.Timestamp(as_of) + pd.Timedelta(days=1)).to_numpy()
        since = lookback_since(as_of, lookback)
        if since is not None:
            sold &= (tx["invoice_ts"] >= pd.Timestamp(since)).to_numpy()
        want = tx["customer_id"][sold].nunique()
        assert 0 < want
        assert data_for(feature_lookback_days=lookback).customers_as_of(as_of) == want  # streamed
        loaded = data_for(feature_lookback_days=lookback)
        loaded.feature_history()
        assert loaded.customers_as_of(as_of) == want  # from the loaded history


def test_the_evaluation_reads_the_lines_after_its_windows_only(data_for, reads):
    from purchasing_power.gate import evaluate_anchor

    anchor = DAY
    first = evaluate_anchor(data_for(), anchor, baselines_only=True, force=True)  # computes and stores the windows' features
    assert first["purchase"] and first["spend"]
    reads.clear()
    again = evaluate_anchor(data_for(), anchor, baselines_only=True, force=True)
    assert again == first
    label_reads = [days for days, columns in reads if columns == LABEL_COLUMNS]
    assert len(label_reads) == 1 and reads == [(label_reads[0], LABEL_COLUMNS)]  # nothing else read the clean history
    assert min(label_reads[0]) == anchor - timedelta(days=90) + timedelta(days=1) and max(label_reads[0]) == anchor


def test_a_training_table_reads_the_lines_after_its_first_snapshot_only(data_for, reads):
    from purchasing_power.train import snapshots, training_table

    anchor = DAY
    data = data_for()
    snaps = snapshots(data, anchor, anchor - timedelta(days=30))
    assert len(snaps) > 10
    first = training_table(data, snaps, anchor)  # computes and stores the snapshots' features
    assert first["purchased"].sum() > 0 and len(first) > 0
    reads.clear()
    again = training_table(data_for(), snaps, anchor)
    pd.testing.assert_frame_equal(again, first)
    assert [columns for _, columns in reads] == [LABEL_COLUMNS]
    [(days, _)] = reads
    assert min(days) == snaps[0] + timedelta(days=1) and max(days) == anchor


def test_train_and_evaluate_read_the_history_from_their_snapshots_lookback_on(tmp_path, monkeypatch):
    """With a feature lookback, the train and evaluate tasks read no clean partition before the
    lookback of their earliest as-of day (train.earliest_snapshot of the previous anchor): those
    partitions made unreadable, both tasks complete."""
    from purchasing_power.calendar import anchor_for, previous_anchor
    from purchasing_power.demo import write_demo_source
    from purchasing_power.features import lookback_since
    from purchasing_power.pipeline import run_stage, run_stage_report, settings_for
    from purchasing_power.train import earliest_snapshot

    source = write_demo_source(str(tmp_path / "transactions.parquet"), n_customers=150, start=date(2022, 6, 1),
                               end=date(2024, 3, 31), seed=11)
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "s"))
    params = {"source": source, "day": DAY.isoformat()}
    over = {"use_text": False, "feature_lookback_days": 365, "training_lookback_days": 120, "candidates": ["logreg"]}
    for stage in ("extract", "clean"):
        run_stage(stage, params, overrides=over)
    settings = settings_for(params, over)
    anchor = anchor_for(settings, DAY)
    since = lookback_since(earliest_snapshot(settings, previous_anchor(settings, anchor)), 365)
    old = sorted(p for p in (tmp_path / "s").glob("sources/*/clean/ds=*/clean.parquet")
                 if date.fromisoformat(p.parent.name.removeprefix("ds=")) < since)
    assert len(old) > 10
    for path in old[1:]:  # the first one tells the history's first day (RunData.first_day)
        path.write_bytes(b"not parquet")
    train = run_stage_report("train", params, overrides=over)[1]
    assert train["training"]["fitted"] and train["champion_anchor"] == previous_anchor(settings, anchor).isoformat()
    evaluation = run_stage_report("evaluate", params, overrides=over)[1]
    assert evaluation["purchase"]["candidate"]["roc_auc"] > 0
