"""Publish: ``metrics.json`` is the day's commit marker (written last, holding the sha256 of the
predictions it belongs to), so a reader never sees new predictions beside old metrics; leftover
temporary files are cleaned."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from purchasing_power import storage as storage_mod
from purchasing_power.score import predictions_frame
from purchasing_power.settings import Settings
from purchasing_power.stages.publish import publish_day
from purchasing_power.storage import (
    PREDICTIONS_FILE,
    PREDICTIONS_SHA256,
    Storage,
    metrics_path,
    predictions_path,
    published_metrics,
)
from purchasing_power.ui import page_data as page

DAY = date(2011, 8, 31)
PREV = DAY - timedelta(days=1)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(storage=str(tmp_path / "data"), source=str(tmp_path / "source.parquet"))


def _stage(settings: Settings, day: date, seed: int) -> bytes:
    """Stage predictions for ``day`` as the score task does; return their bytes."""
    rng = np.random.default_rng(seed)
    ids = pd.Index(np.arange(100, 120, dtype=np.int64))
    frame = predictions_frame(ids, rng.random(20), rng.random(20) * 100, day, f"v-{seed}", settings)
    out = Storage.at(settings.storage)
    path = out.write_parquet(frame, out.path("scores", day, PREDICTIONS_FILE))
    return open(path, "rb").read()


def _published_view(settings: Settings) -> tuple[list[date], str]:
    page.clear_cache()
    return page.available_days(Storage.at(settings.storage)), page.page_data(settings.storage)["as_of"]


def test_metrics_is_written_last_and_records_the_predictions_hash(settings, monkeypatch):
    staged = _stage(settings, DAY, seed=1)
    written: list[str] = []
    real = storage_mod.atomic_write_bytes
    monkeypatch.setattr(storage_mod, "atomic_write_bytes", lambda p, d: (written.append(p.rsplit("/", 2)[-2:][-1]), real(p, d)))
    publish_day(settings, DAY)
    out = Storage.at(settings.storage)
    assert open(predictions_path(out, DAY), "rb").read() == staged
    metrics = out.read_json(metrics_path(out, DAY))
    assert metrics[PREDICTIONS_SHA256] == hashlib.sha256(staged).hexdigest()
    assert written.index("predictions.parquet") < written.index("metrics.json") < written.index("report.json")
    assert published_metrics(out, DAY) == metrics


def test_a_publish_killed_before_its_metrics_leaves_the_day_unpublished(settings, monkeypatch):
    """A rerun of D writes its new predictions and dies before metrics.json: no reader may show
    the new predictions beside D's old metrics. D reads as not published (the page falls back to
    the latest consistent day) until the retry commits it."""
    for d, seed in ((PREV, 1), (DAY, 2)):
        _stage(settings, d, seed)
        publish_day(settings, d)
    out = Storage.at(settings.storage)
    assert _published_view(settings) == ([PREV, DAY], DAY.isoformat())
    old_metrics = open(metrics_path(out, DAY), "rb").read()

    new = _stage(settings, DAY, seed=3)  # the rerun scores differently
    real_write_json = Storage.write_json

    def killed(self, obj, path):
        if path.endswith("/metrics.json"):
            raise SystemExit("worker killed")
        return real_write_json(self, obj, path)

    monkeypatch.setattr(Storage, "write_json", killed)
    with pytest.raises(SystemExit):
        publish_day(settings, DAY)
    monkeypatch.setattr(Storage, "write_json", real_write_json)
    assert open(predictions_path(out, DAY), "rb").read() == new
    assert open(metrics_path(out, DAY), "rb").read() == old_metrics

    assert published_metrics(out, DAY) is None
    assert _published_view(settings) == ([PREV], PREV.isoformat())
    with pytest.raises(LookupError):
        page.page_data(settings.storage, DAY)

    publish_day(settings, DAY)  # the retry commits the day
    days, as_of = _published_view(settings)
    assert (days, as_of) == ([PREV, DAY], DAY.isoformat())
    assert page.page_data(settings.storage)["predictions"]["model_versions"] == {"v-3": 20}
    assert published_metrics(out, DAY)[PREDICTIONS_SHA256] == hashlib.sha256(new).hexdigest()


def test_metrics_without_a_recorded_hash_are_taken_as_they_are(settings):
    """Days published before metrics.json carried the marker stay visible."""
    _stage(settings, DAY, seed=1)
    publish_day(settings, DAY)
    out = Storage.at(settings.storage)
    legacy = out.read_json(metrics_path(out, DAY))
    del legacy[PREDICTIONS_SHA256]
    with open(metrics_path(out, DAY), "w") as fh:
        json.dump(legacy, fh)
    assert published_metrics(out, DAY) == legacy
    assert _published_view(settings) == ([DAY], DAY.isoformat())


def test_publish_removes_temp_files_left_by_killed_writers(settings):
    out = Storage.at(settings.storage)
    two_hours_ago = time.time() - 7200
    leftovers = []
    for dataset, name in (("predictions", PREDICTIONS_FILE), ("metrics", "metrics.json")):
        folder = os.path.dirname(out.path(dataset, DAY, name))
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex}")
        with open(tmp, "wb") as fh:
            fh.write(b"partial")
        os.utime(tmp, (two_hours_ago, two_hours_ago))
        leftovers.append(tmp)
    _stage(settings, DAY, seed=1)
    publish_day(settings, DAY)
    assert [p for p in leftovers if os.path.exists(p)] == []
    assert sorted(os.listdir(os.path.dirname(predictions_path(out, DAY)))) == [PREDICTIONS_FILE]
    assert sorted(os.listdir(os.path.dirname(metrics_path(out, DAY)))) == ["metrics.json", "report.json"]
