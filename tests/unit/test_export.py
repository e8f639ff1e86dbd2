"""The export Dag's stage: one tier of the day a predictions Asset event names, checked against
the storage (a hand-posted event cannot point elsewhere or misreport the rows)."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest

from purchasing_power.errors import InputError
from purchasing_power.export import asset_extra, tier_rows
from purchasing_power.pipeline import run_export_tier
from purchasing_power.storage import Storage, predictions_path

DAY = date(2024, 6, 30)


@pytest.fixture()
def published(tmp_path, monkeypatch):
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "data"))
    store = Storage.at(str(tmp_path / "data"))
    n = 10
    frame = pd.DataFrame({
        "customer_id": np.arange(100, 100 + n, dtype="int64")[::-1], "as_of": [DAY] * n,
        "p_purchase_30d": np.linspace(0.1, 0.9, n), "expected_spend_90d": np.arange(n, dtype=float),
        "tier": ["high"] * 3 + ["medium"] * 3 + ["low"] * 4, "model_version": "pp-test",
    })
    path = store.write_parquet(frame, predictions_path(store, DAY))
    return store, frame, {"day": DAY.isoformat(), "path": path, "rows": n}


def test_the_days_high_tier_is_exported_and_a_rerun_overwrites(published):
    store, frame, extra = published
    first = json.loads(open(run_export_tier(extra, "high")).read())
    out = pd.read_parquet(first["path"])
    assert first["rows"] == 3 and first["path"].endswith(f"exports/ds={DAY}/high-tier.parquet")
    assert out["customer_id"].tolist() == sorted(frame.loc[frame["tier"] == "high", "customer_id"])
    before = open(first["path"], "rb").read()
    run_export_tier(extra, "high")
    assert open(first["path"], "rb").read() == before
    assert len(list((store.fs.ls(store.path("exports", DAY))))) == 1


def test_events_that_disagree_with_the_storage_are_refused(published, tmp_path):
    store, frame, extra = published
    with pytest.raises(InputError, match="reports 11 rows"):
        run_export_tier({**extra, "rows": 11})
    with pytest.raises(InputError, match="lacks \\['path'\\]"):
        run_export_tier({"day": extra["day"], "rows": 10})
    with pytest.raises(InputError, match="non-integer"):
        run_export_tier({**extra, "rows": "ten"})
    other = tmp_path / "elsewhere.parquet"
    frame.to_parquet(other)
    with pytest.raises(Exception, match="storage root|outside|escapes"):
        run_export_tier({**extra, "path": str(other)})
    with pytest.raises(InputError, match="does not exist"):
        run_export_tier({**extra, "path": store.path("predictions", date(2024, 7, 1), "predictions.parquet")})
    with pytest.raises(InputError, match="other days"):
        run_export_tier({**extra, "day": "2024-07-01"})
    assert not store.exists(store.path("exports"))


def test_tiers_and_the_event_extra():
    frame = pd.DataFrame({"customer_id": ["b", "a", "c"], "tier": ["high", "high", "low"]})
    assert tier_rows(frame, "high")["customer_id"].tolist() == ["a", "b"]
    with pytest.raises(InputError, match="not one of"):
        tier_rows(frame, "gold")
    report = {"day": "2024-06-30", "predictions_path": "/d/p.parquet", "metrics_path": "/d/m.json", "rows": 7, "volume_status": "ok"}
    assert asset_extra(report) == {"day": "2024-06-30", "path": "/d/p.parquet", "rows": 7, "metrics_path": "/d/m.json", "volume_status": "ok"}
