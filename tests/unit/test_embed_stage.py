"""The embed stage as the DAG runs it: plan shards of new texts, embed each shard (mapped
tasks), merge through the cache; a rerun plans one empty shard and removes stale ones."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from purchasing_power import embedding, pipeline
from purchasing_power.pipeline import run_embed_plan, run_embed_shard, run_stage
from purchasing_power.storage import Storage

DAY = date(2011, 8, 31)


def _params(settings) -> dict:
    return {"day": DAY.isoformat(), "source": settings.source}


def _with_overrides(monkeypatch, **overrides) -> None:
    """Settings run conf may not carry (``embed_shard_texts``, ``use_text``), set as code
    overrides for every stage the DAG's task functions run here."""
    real = pipeline.settings_for
    monkeypatch.setattr(pipeline, "settings_for", lambda params, extra=None: real(params, {**overrides, **(extra or {})}))


def test_plan_map_merge_and_rerun(settings_factory, monkeypatch):
    settings = settings_factory()
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", settings.storage)
    _with_overrides(monkeypatch, embed_shard_texts=2)
    params = _params(settings)
    run_stage("extract", params)
    run_stage("clean", params)

    shards = run_embed_plan(params)
    out = Storage.at(settings.storage)
    texts = [t for sh in shards for t in out.read_parquet(sh)["text"]]
    # tiny_raw has 3 distinct clean descriptions -> shards of at most 2 texts
    assert len(shards) == 2 and sorted(texts) == sorted(set(texts)) and len(texts) == 3
    report = json.loads(Path(out.path("runs", DAY, "embed.json")).read_text())
    assert report["new"] == 3 and report["cached"] == 0 and report["shards"] == shards

    for sh in shards:
        shard_report = json.loads(Path(run_embed_shard(sh, params)).read_text())
        assert shard_report["new"] == len(out.read_parquet(sh))
        # the part lands under the precision this worker computed in (auto, resolved here)
        precision = embedding.resolve_precision("auto", "cpu")
        assert shard_report["precision"] == precision and f"/precision={precision}/part-" in shard_report["cache_part"]
    vectors = embedding.load_vectors(texts, out, settings)
    assert vectors.shape == (3, 384)

    # a rerun: nothing new, no shard (the mapped task expands to nothing), stale shard files gone
    again = run_embed_plan(params)
    assert again == []
    assert not Path(out.path("embed_shards", DAY)).exists()
    report = json.loads(Path(out.path("runs", DAY, "embed.json")).read_text())
    assert report["new"] == 0 and report["cached"] == 3 and report["shards"] == []


def test_plan_skips_when_text_is_off(settings_factory, monkeypatch):
    settings = settings_factory()
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", settings.storage)
    _with_overrides(monkeypatch, embed_shard_texts=2, use_text=False)
    params = _params(settings)
    run_stage("extract", params)
    run_stage("clean", params)
    assert run_embed_plan(params) == []
