"""Texts -> vectors: the encoder, shape-stable batching and :func:`embed_texts`.

A text's vector is the mean of its token embeddings over the attention mask, L2-normalised (what
sentence-transformers does for this model), as float32; the tokenizer and model are loaded
offline with ``transformers``.

Determinism. The pipeline needs a text's vector to be *bit-identical* whichever other texts it
was embedded with and in whatever order (a day run alone and the same day inside a backfill must
publish the same bytes). Floating-point kernels may pick different blockings, thread splits or
algorithms for different tensor shapes, so every kernel a text goes through must see shapes that
depend on its own length only ("shape-stable batching"):

* BERT encoders (this model) run *packed* (:class:`~purchasing_power.embedding.packed_bert.PackedBert`):
  the texts' tokens are laid end to end without padding in a ``[tokens, hidden]`` matrix; every
  token-wise op (embeddings, matmuls, LayerNorm, GELU) runs over fixed-size chunks of
  ``batch_tokens`` rows (the last chunk of a wave zero-filled); attention and mean pooling run per
  group of ``rows_per_batch(n)`` texts of the same token length ``n`` (the last group of a length
  filled with zero dummies), with no mask since no row is padding. No FLOP goes to padding,
  except one chunk tail per wave.
* Other architectures run through the transformers module on padded batches: token lengths map
  to a fixed grid of padded lengths (``length_grid``), each padded length has a fixed number of
  rows per batch (the last batch filled with dummy rows) and the mask is always applied.

Vectors still depend on the compute precision and may depend on the batch settings and thread
count (see :mod:`purchasing_power.embedding.device`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from purchasing_power.embedding.device import available_cores, device_name, resolve_device, resolve_precision
from purchasing_power.embedding.model_ref import ModelRef, check_recipe, model_dim, model_max_length
from purchasing_power.embedding.packed_bert import PackedBert, bert_weights

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

#: Matmul chunk rows (packed path) / most padded tokens per batch (padded path); texts per
#: attention group or batch are ``batch_tokens // length``, capped by ``batch_size``.
CPU_BATCH_TOKENS = 1024
CUDA_BATCH_TOKENS = 65536
#: On CUDA the row cap is ``batch_size * CUDA_BATCH_SCALE`` (256 -> 1024).
CUDA_BATCH_SCALE = 4


class _Encoder:
    """Tokenizer + model. BERT encoders run through :class:`PackedBert` (no padding at all);
    other architectures through the transformers module with padded, length-bucketed batches."""

    def __init__(self, path: str, device: str, precision: str = "float32"):
        from transformers import AutoConfig, AutoTokenizer

        check_recipe(Path(path))
        self.path = path
        self.device = device
        self.precision = precision
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.config = AutoConfig.from_pretrained(path, local_files_only=True)
        self.dim = int(self.config.hidden_size)
        self._model: Any = None
        self.packed = None
        if PackedBert.supports(self.config):
            # The packed forward needs the weights only: read them straight from the checkpoint
            # (milliseconds) instead of building the transformers module (~0.4 s of CPU in a
            # fresh task process); a checkpoint with other tensor names goes through the module.
            weights = bert_weights(Path(path), self.config)
            if weights is None:
                weights = self.model.state_dict()
            self.packed = PackedBert(self.config, {k: v.detach().to(device) for k, v in weights.items()}, device, precision)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = self.tokenizer("", add_special_tokens=True)["input_ids"]
        self.special_ids = list(ids) or [self.pad_id]

    @property
    def model(self) -> Any:
        """The transformers module (built on first use: the generic padded path, or a BERT
        checkpoint whose tensor names :func:`bert_weights` does not know)."""
        if self._model is None:
            from transformers import AutoModel

            try:
                model = AutoModel.from_pretrained(self.path, local_files_only=True, attn_implementation="sdpa")
            except (ValueError, ImportError, TypeError):  # architectures without SDPA support
                model = AutoModel.from_pretrained(self.path, local_files_only=True)
            self._model = model.eval().to(self.device)
        return self._model

    def forward_padded(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Generic path: [B, L] ids and mask -> [B, dim] float32 L2-normalised mean-pooled."""
        import torch
        import torch.nn.functional as F

        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(dim=1) / torch.clamp(m.sum(dim=1), min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


@functools.lru_cache(maxsize=4)
def _load_model(path: str, device: str, precision: str) -> _Encoder:
    """Load (once per process, device and precision) the tokenizer and model of a folder, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    enc = _Encoder(path, device, precision)
    log.info("loaded embedding model %s on %s in %.1fs", path, device, time.perf_counter() - t0)
    return enc


# =============================================================================================
# shape-stable batching
# =============================================================================================
def length_grid(max_length: int) -> list[int]:
    """Padded lengths of the generic (padded) path: every length up to 16, then steps of
    2/4/8/16/32 up to 512, capped at ``max_length``."""
    grid: list[int] = []
    prev = 0
    for limit, step in ((16, 1), (32, 2), (64, 4), (128, 8), (256, 16), (512, 32)):
        grid.extend(range(prev + step, limit + 1, step))
        prev = limit
    return [g for g in grid if g < max_length] + [max_length]


def padded_length(n: int, grid: Sequence[int]) -> int:
    import bisect

    return grid[min(bisect.bisect_left(grid, n), len(grid) - 1)]


def rows_per_batch(length: int, batch_size: int, batch_tokens: int) -> int:
    """Texts per batch (padded path) or per attention/pooling group (packed path) for texts of
    ``length`` tokens: a function of the length and the settings only."""
    return max(1, min(int(batch_size), int(batch_tokens) // int(length)))


@dataclass(frozen=True)
class _Plan:
    rows_cap: int  # most texts per batch / group
    tokens: int  # padded path: most tokens per batch; packed path: matmul chunk rows
    wave_chunks: int  # packed path: chunks per wave (bounds memory)


def _plan_for(dev: str, batch_size: int, batch_tokens: int | None) -> _Plan:
    on_cuda = dev.startswith("cuda")
    return _Plan(
        rows_cap=int(batch_size) * (CUDA_BATCH_SCALE if on_cuda else 1),
        tokens=int(batch_tokens or (CUDA_BATCH_TOKENS if on_cuda else CPU_BATCH_TOKENS)),
        wave_chunks=8 if on_cuda else 32,
    )


# =============================================================================================
# embedding
# =============================================================================================
def _tokenize(enc: _Encoder, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids with special tokens, truncated to ``max_length`` the way the tokenizer's
    ``truncation=True`` does it for one sequence (keep the final [SEP]); returns (ids, truncated)."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "sequence longer than model max" is expected here
    try:
        ids = enc.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    finally:
        transformers.logging.set_verbosity(verbosity)
    n_tail = max(0, len(enc.special_ids) - 1)  # [CLS] x [SEP]: keep the one closing token
    truncated = 0
    for i, row in enumerate(ids):
        if len(row) > max_length:
            truncated += 1
            ids[i] = row[: max_length - n_tail] + (row[len(row) - n_tail :] if n_tail else [])
    return ids, truncated


class _Progress:
    def __init__(self, total: int, total_work: int, every: int):
        self.total, self.total_work, self.every = total, max(total_work, 1), every
        self.done = self.work = 0
        self.next = every if every and every > 0 else None
        self.t0 = time.perf_counter()

    def step(self, texts: int, work: int) -> None:
        self.done += texts
        self.work += work
        if self.next is not None and self.done >= self.next:
            el = time.perf_counter() - self.t0
            eta = el * (self.total_work - self.work) / max(self.work, 1)
            log.info("embedded %d/%d texts (%.0f texts/s, ETA %.0fs)", self.done, self.total, self.done / max(el, 1e-9), eta)
            while self.next <= self.done:
                self.next += self.every


def _run_packed(enc: _Encoder, ids: list[list[int]], order: np.ndarray, plan: _Plan, out: np.ndarray, progress_every: int) -> int:
    """Embed via :class:`PackedBert`; returns the matmul rows computed (tokens + chunk tails)."""
    import torch

    dev, chunk = enc.device, plan.tokens
    wave_cap = chunk * plan.wave_chunks
    lengths = np.fromiter((len(ids[i]) for i in order), dtype=np.int64, count=len(order))
    # waves: consecutive texts (sorted by length) up to wave_cap tokens (at least one text)
    waves: list[tuple[int, int]] = []
    start = tokens = 0
    for j, n in enumerate(lengths.tolist()):
        if tokens + n > wave_cap and j > start:
            waves.append((start, j))
            start, tokens = j, 0
        tokens += n
    waves.append((start, len(order)))
    total_rows = sum(-(-int(lengths[a:b].sum()) // chunk) * chunk for a, b in waves)
    progress = _Progress(len(order), total_rows, progress_every)
    for a, b in waves:
        members = order[a:b]
        wl = lengths[a:b]
        used = int(wl.sum())
        M = -(-used // chunk) * chunk
        flat = np.full(M, enc.pad_id, dtype=np.int64)
        pos = np.zeros(M, dtype=np.int64)
        groups: list[tuple[int, int, int, int]] = []
        r = 0
        j = 0
        while j < len(members):
            n = int(wl[j])
            k = int(np.searchsorted(wl, n, side="right")) - j  # texts of length n (sorted)
            G = rows_per_batch(n, plan.rows_cap, chunk)
            for s in range(0, k, G):
                g = min(G, k - s)
                groups.append((r + s * n, n, g, G))
            for t in range(j, j + k):
                flat[r : r + n] = ids[members[t]]
                pos[r : r + n] = np.arange(n)
                r += n
            j += k
        t_ids = torch.from_numpy(flat).to(dev)
        t_pos = torch.from_numpy(pos).to(dev)
        hidden = enc.packed.hidden_states(t_ids, t_pos, groups, chunk)
        out[members] = enc.packed.pool(hidden, groups).float().cpu().numpy()
        progress.step(len(members), M)
    return total_rows


def _run_padded(enc: _Encoder, ids: list[list[int]], max_len: int, plan: _Plan, out: np.ndarray, progress_every: int) -> int:
    """Generic path: length buckets on a fixed grid, fixed rows per bucket (last batch filled
    with dummy rows), attention mask always applied; returns the padded tokens computed."""
    import torch

    dev = enc.device
    lengths = np.fromiter((len(r) for r in ids), dtype=np.int64, count=len(ids))
    grid = length_grid(max_len)
    padded = np.array(grid, dtype=np.int64)[np.minimum(np.searchsorted(grid, lengths), len(grid) - 1)]
    order = np.lexsort((np.arange(len(ids)), padded))
    batches: list[tuple[int, int, np.ndarray]] = []
    for L in np.unique(padded):
        members = order[padded[order] == L]
        rows = rows_per_batch(int(L), plan.rows_cap, plan.tokens)
        batches += [(int(L), rows, members[s : s + rows]) for s in range(0, len(members), rows)]
    total = sum(L * rows for L, rows, _ in batches)
    progress = _Progress(len(ids), total, progress_every)
    dummy = enc.special_ids
    low = enc.precision != "float32"
    autocast = torch.autocast(dev.split(":")[0], dtype=getattr(torch, enc.precision)) if low else contextlib.nullcontext()
    with autocast:
        for L, rows, members in batches:
            buf = np.full((rows, L), enc.pad_id, dtype=np.int64)
            msk = np.zeros((rows, L), dtype=np.int64)
            for r, idx in enumerate(members):
                buf[r, : len(ids[idx])] = ids[idx]
                msk[r, : len(ids[idx])] = 1
            for r in range(len(members), rows):  # dummy rows, discarded
                buf[r, : len(dummy)] = dummy
                msk[r, : len(dummy)] = 1
            vec = enc.forward_padded(torch.from_numpy(buf).to(dev), torch.from_numpy(msk).to(dev))
            out[members] = vec[: len(members)].float().cpu().numpy()
            progress.step(len(members), L * rows)
    return total


def embed_texts(
    texts: Sequence[str],
    ref: ModelRef,
    *,
    device: str = "auto",
    batch_size: int = 256,
    threads: int = 0,
    max_length: int | None = None,
    log_every: int = 5000,
    batch_tokens: int | None = None,
    precision: str = "auto",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embed ``texts`` (in order) into float32 ``[n, dim]``, L2-normalised rows.

    ``max_length``: truncation length in tokens (default: the model's ``max_seq_length``, as
    sentence-transformers; capped by the model's position embeddings). It must not depend on the
    data: a text's vector would then depend on the other texts. ``threads``: intra-op threads
    (0: every available core). ``batch_size``: most texts per attention group / batch (x4 on
    CUDA); ``batch_tokens``: rows of each matmul chunk (default 1024 on CPU, 65536 on CUDA).
    ``precision``: compute dtype, :func:`resolve_precision` (``auto``: float16 on CUDA, bfloat16
    on CPUs with native bf16, else float32). Vectors are bit-stable for fixed (model, device
    kind, precision, batch settings, threads).
    """
    import torch

    t_start = time.perf_counter()
    dev = resolve_device(device)
    with open(Path(ref.path) / "config.json") as fh:
        pos_limit = int(json.load(fh).get("max_position_embeddings", 512))
    max_len = min(int(max_length), pos_limit) if max_length else model_max_length(ref)
    if max_len < 2:
        raise ValueError(f"max_length must be >= 2, got {max_len}")
    plan = _plan_for(dev, batch_size, batch_tokens)
    n_threads = int(threads) if threads and int(threads) > 0 else available_cores()
    stats: dict[str, Any] = {
        "device": dev,
        "device_name": device_name(dev),
        "texts": len(texts),
        "max_length": max_len,
        "threads": n_threads,
        "batch_size": plan.rows_cap,
        "batch_tokens": plan.tokens,
        "dtype": resolve_precision(precision, dev),
    }
    if len(texts) == 0:
        stats.update(seconds=0.0, texts_per_s=0.0, truncation_rate=0.0, truncated=0, tokens=0, computed_tokens=0)
        return np.zeros((0, model_dim(ref)), dtype=np.float32), stats

    old_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        enc = _load_model(ref.path, dev, stats["dtype"])
        t_tok = time.perf_counter()
        ids, truncated = _tokenize(enc, texts, max_len)
        lengths = np.fromiter((len(r) for r in ids), dtype=np.int64, count=len(ids))
        order = np.lexsort((np.arange(len(ids)), lengths))
        stats["tokenize_seconds"] = round(time.perf_counter() - t_tok, 3)
        out = np.empty((len(ids), enc.dim), dtype=np.float32)
        t_run = time.perf_counter()
        every = int(log_every or 0)
        with torch.inference_mode():
            if enc.packed is not None:
                stats["path"] = "packed"
                computed = _run_packed(enc, ids, order, plan, out, every)
            else:
                stats["path"] = "padded"
                computed = _run_padded(enc, ids, max_len, plan, out, every)
    finally:
        torch.set_num_threads(old_threads)

    seconds = time.perf_counter() - t_start
    real_tokens = int(lengths.sum())
    stats.update(
        seconds=round(seconds, 3),
        embed_seconds=round(time.perf_counter() - t_run, 3),
        texts_per_s=round(len(ids) / max(seconds, 1e-9), 1),
        truncation_rate=round(truncated / len(ids), 6),
        truncated=truncated,
        tokens=real_tokens,
        computed_tokens=int(computed),
        padding_overhead=round(computed / max(real_tokens, 1) - 1, 4),
        token_length_p50_p95_p99_max=[int(x) for x in np.percentile(lengths, [50, 95, 99, 100])],
    )
    if every and len(ids) >= every:
        log.info("embedded %d texts in %.1fs (%.0f texts/s) on %s", len(ids), seconds, stats["texts_per_s"], dev)
    return out, stats
