"""The embed stage: embed the product descriptions of the clean history, and the clean user
texts when features use them, that the embedding cache lacks (one cache and model for both).

``run_all`` runs it in one pass (:func:`embed_day`); the DAG splits it into :func:`plan_day`,
which writes the new texts as shards, and :func:`embed_shard`, mapped over those shards.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from purchasing_power.embedding import embed_new, plan_shards, resolve_model, split_texts
from purchasing_power.history import load_clean_history, load_user_texts
from purchasing_power.settings import Settings
from purchasing_power.storage import SHARD_FILE, Workspace


def embed_day(settings: Settings, day: date) -> dict[str, Any]:
    """Stage function (one pass, for ``run_all``; the DAG runs ``plan_day`` + ``embed_shard``):
    embed every distinct product description in the clean history up to the end of ``day``
    that the cache does not hold yet. The report adds the dedup ratio: clean rows with text per
    distinct text embedded now."""
    ws, texts = _day_texts(settings, day)
    if texts is None:
        return {"day": day.isoformat(), "skipped": "use_text is off and no user text"}
    rows, empty, unique = texts
    report = embed_new(unique, ws.root, settings)
    report.update(day=day.isoformat(), rows=rows, empty=empty, dedup_ratio=_dedup_ratio(rows - empty, report["new"]))
    return report


def _dedup_ratio(with_text: int, new: int) -> float | None:
    """Clean rows with text per distinct text embedded now (None when nothing is new)."""
    return round(with_text / new, 1) if new else None


def _day_texts(settings: Settings, day: date) -> tuple[Workspace, tuple[int, int, list[str]] | None]:
    """The workspace and the texts features read up to the end of ``day`` as (rows, empty rows,
    sorted distinct non-empty texts): the description of every clean row (``use_text``) and
    every clean user text (``usertext.user_text_on``); ``None`` when features read no text.
    Descriptions are read dictionary-encoded: each partition's distinct texts, not one Python
    string per row."""
    import numpy as np

    ws = Workspace.for_settings(settings)
    user = load_user_texts(settings, day)
    if not settings.use_text and user is None:
        return ws, None
    rows, empty, unique = split_texts(user["text"].tolist() if user is not None else [])
    if settings.use_text:
        desc = load_clean_history(settings, day, columns=["description"], dictionary=["description"])["description"]
        if len(desc):
            codes, texts = desc.cat.codes.to_numpy(), desc.cat.categories.to_numpy(dtype=object)
            used = np.unique(codes[codes >= 0])
            blank = used[texts[used] == ""]  # "" is empty text, like a missing description
            rows += len(desc)
            empty += int((codes < 0).sum() + np.isin(codes, blank).sum())
            unique = sorted(set(unique) | {t for t in texts[used] if t != ""})
    return ws, (rows, empty, unique)


def plan_day(settings: Settings, day: date) -> dict[str, Any]:
    """Stage function (Airflow): split the texts the cache lacks into shards of at most
    ``settings.embed_shard_texts`` and write each as ``embed_shards/ds=D/shard-NNNN.parquet``.

    A day with nothing new has no shard: the mapped embed task expands to zero instances (shown
    as skipped) and features runs after it all the same. Stale shards of an earlier attempt are
    removed.
    The report (``runs/ds=D/embed.json``, read by publish) lists the shard paths."""
    import pandas as pd

    ws, texts = _day_texts(settings, day)
    if texts is None:
        return {"day": day.isoformat(), "skipped": "use_text is off and no user text", "shards": []}
    rows, empty, unique = texts
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
