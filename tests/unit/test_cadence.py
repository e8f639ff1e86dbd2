"""Cadence: a day whose anchor is already decided skips train/evaluate/gate and publishes the
anchor's stored decision; the same day run on fresh storage publishes the same bytes."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from purchasing_power.demo import write_demo_source
from purchasing_power.errors import NothingToDo
from purchasing_power.pipeline import run_all, run_features, settings_for
from purchasing_power.calendar import anchor_for
from purchasing_power.stages.train import train_day

DAY = date(2024, 3, 20)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("src") / "transactions.parquet"
    return write_demo_source(str(path), n_customers=120, start=date(2023, 6, 1), end=date(2024, 3, 31), seed=3)


def _settings(storage: Path, source: str):
    return settings_for({"source": source}, {"storage": str(storage), "use_text": False})


def test_decided_anchor_skips_training_and_publishes_the_stored_decision(tmp_path, source, monkeypatch):
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "a"))
    params, code = {"source": source}, {"use_text": False}
    settings = _settings(tmp_path / "a", source)
    later = DAY + timedelta(days=1)
    assert anchor_for(settings, DAY) == anchor_for(settings, later), "both days must share an anchor"

    first = run_all(params, DAY, overrides=code)
    assert {"train", "evaluate", "gate"} <= set(first)
    second = run_all(params, later, overrides=code)
    assert not {"train", "evaluate", "gate"} & set(second), second
    with pytest.raises(NothingToDo, match=f"anchor {anchor_for(settings, DAY)} is already decided"):
        train_day(settings, later)
    # what the DAG maps train over: the first day of the anchor needs a model, the next does not
    feats = {d: json.loads(Path(first["features"] if d == DAY else second["features"]).read_text()) for d in (DAY, later)}
    assert feats[DAY]["needs_training"] is True and feats[DAY]["decision_path"] is None
    assert feats[later]["needs_training"] is False and feats[later]["decision_path"].endswith("decision.json")
    assert run_features({**params, "day": later.isoformat()}, overrides=code) == []
    assert run_features({**params, "day": later.isoformat(), "force_retrain": True}, overrides=code) != []

    out = tmp_path / "a" / "metrics"
    m1 = json.loads((out / f"ds={DAY}" / "metrics.json").read_text())
    m2 = json.loads((out / f"ds={later}" / "metrics.json").read_text())
    assert m2["gate"] == m1["gate"] and m2["gate"]["status"], "the skipped day publishes its anchor's decision"
    assert m2["training"] == m1["training"] and m2["training"]["anchor"] == anchor_for(settings, DAY).isoformat()

    # the later day alone on fresh storage (it fits and gates the anchor itself): same bytes
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "b"))
    alone = run_all(params, later, overrides=code)
    assert "train" in alone
    for rel in (f"predictions/ds={later}/predictions.parquet", f"metrics/ds={later}/metrics.json", f"metrics/ds={later}/report.json"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
