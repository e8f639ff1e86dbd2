"""Stage entry points: one module per Airflow task, each a ``*_day(settings, day)`` function
that reads the stored artefacts of the stages before it, calls the library, writes its own
artefacts and returns a JSON-able report. Nothing in the library imports this package.

``STAGES`` lists the stages in pipeline order, each as ``name -> "module:function"``; the DAG
runs ``embed`` as ``embed_plan`` + a mapped ``embed_shard`` (``EXTRA_STAGES``), and, with
``feature_shards`` > 1, ``features`` as mapped ``feature_stats`` + ``feature_part`` + ``features``
joining them, and ``score`` as mapped ``score_part`` + ``score`` joining them.
"""

from __future__ import annotations

STAGES: dict[str, str] = {
    "extract": "purchasing_power.stages.extract:extract_day",
    "clean": "purchasing_power.stages.clean:clean_day",
    "embed": "purchasing_power.stages.embed:embed_day",
    "features": "purchasing_power.stages.features:features_day",
    "train": "purchasing_power.stages.train:train_day",
    "evaluate": "purchasing_power.stages.evaluate:evaluate_day",
    "gate": "purchasing_power.stages.gate:gate_day",
    "score": "purchasing_power.stages.score:score_day",
    "publish": "purchasing_power.stages.publish:publish_day",  # also writes the UI page's report
}

#: Stages the DAG runs in other shapes: ``embed`` becomes ``embed_plan`` + ``embed_shard``
#: mapped over the plan's shards (dynamic task mapping).
EXTRA_STAGES: dict[str, str] = {
    "embed_plan": "purchasing_power.stages.embed:plan_day",
    "embed_shard": "purchasing_power.stages.embed:embed_shard",
    "feature_stats": "purchasing_power.stages.features:feature_stats_day",  # feature_shards > 1: mapped over the shards
    "feature_part": "purchasing_power.stages.features:feature_part_day",  # idem, then features(combine=True)
    "score_part": "purchasing_power.stages.score:score_part_day",  # feature_shards > 1: mapped, then score(combine=True)
    "export_tier": "purchasing_power.stages.export:export_tier_day",  # the export Dag's, on a predictions event
}

#: stage -> the stages the DAG skips with it (their only upstream) when it has nothing to do.
SKIPPED_WITH: dict[str, tuple[str, ...]] = {"train": ("evaluate", "gate")}
