"""The embed stage: embed the product descriptions of the clean history that the embedding
cache lacks.

``run_all`` runs it in one pass (:func:`embed_day`); the DAG splits it into :func:`plan_day`,
which writes the new texts as shards, and :func:`embed_shard`, mapped over those shards.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from purchasing_power.embedding import embed_new, plan_shards, resolve_model, split_texts
from purchasing_power.history import load_clean_history
from purchasing_power.settings import Settings
from purchasing_power.storage import SHARD_FILE, Workspace


def embed_day(settings: Settings, day: date) -> dict[str, Any]:
    """Stage function (one pass, for ``run_all``; the DAG runs ``plan_day`` + ``embed_shard``):
    embed every distinct product description in the clean history up to the end of ``day``
    that the cache does not hold yet. The report adds the dedup ratio: clean rows with text per
    distinct text embedded now."""
    if not settings.use_text:
        return {"day": day.isoformat(), "skipped": "use_text is off"}
    ws, texts = _day_texts(settings, day)
    report = embed_new(texts, ws.root, settings)
    report["day"] = day.isoformat()
    report["dedup_ratio"] = _dedup_ratio(report["rows"] - report["empty"], report["new"])
    return report


def _dedup_ratio(with_text: int, new: int) -> float | None:
    """Clean rows with text per distinct text embedded now (None when nothing is new)."""
    return round(with_text / new, 1) if new else None


def _day_texts(settings: Settings, day: date) -> tuple[Workspace, list[Any]]:
    """The workspace and the description of every clean row up to the end of ``day``."""
    ws = Workspace.for_settings(settings)
    tx = load_clean_history(settings, day, columns=["description"])
    return ws, (tx["description"].tolist() if len(tx) else [])


def plan_day(settings: Settings, day: date) -> dict[str, Any]:
    """Stage function (Airflow): split the texts the cache lacks into shards of at most
    ``settings.embed_shard_texts`` and write each as ``embed_shards/ds=D/shard-NNNN.parquet``.

    A day with nothing new has no shard: the mapped embed task expands to zero instances (shown
    as skipped) and features runs after it all the same. Stale shards of an earlier attempt are
    removed.
    The report (``runs/ds=D/embed.json``, read by publish) lists the shard paths."""
    import pandas as pd

    if not settings.use_text:
        return {"day": day.isoformat(), "skipped": "use_text is off", "shards": []}
    ws, texts = _day_texts(settings, day)
    rows, empty, unique = split_texts(texts)
    shards = plan_shards(unique, settings.embed_shard_texts, storage=ws.root, settings=settings)
    ref = resolve_model(settings.embed_model)
    folder = ws.root.path("embed_shards", day)
    if ws.root.fs.exists(folder):
        ws.root.fs.rm(folder, recursive=True)
    paths = []
    for i, shard in enumerate(shards):
        frame = pd.DataFrame({"text": pd.Series(shard, dtype="string")})
        paths.append(ws.root.write_parquet(frame, ws.root.path("embed_shards", day, SHARD_FILE.format(i))))
    new = sum(len(sh) for sh in shards)
    return {
        "day": day.isoformat(),
        "rows": rows,
        "empty": empty,
        "unique": len(unique),
        "cached": len(unique) - new,
        "new": new,
        "dedup_ratio": _dedup_ratio(rows - empty, new),
        "model_id": ref.model_id,
        "revision": ref.revision,
        "shards": paths,
    }


def embed_shard(settings: Settings, day: date, shard: str) -> dict[str, Any]:
    """Stage function (Airflow, mapped): embed one shard's texts into the cache. Shards write
    separate content-addressed parts, so they merge by construction and a retried shard
    rewrites the same part."""
    ws = Workspace.for_settings(settings)
    texts = ws.root.read_parquet(shard)["text"].tolist()
    report = embed_new(texts, ws.root, settings)
    report.update(day=day.isoformat(), shard=shard)
    return report
