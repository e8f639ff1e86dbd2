"""Product-description text -> sentence vectors, through a content-addressed cache.

The modules, each one job (dependencies point down the list):

* :mod:`~purchasing_power.embedding.cache`: the vector cache under the storage root (a folder
  per compute precision; readers take the precision :func:`read_precision` names), and what
  fills and reads it (:func:`embed_new`, :func:`plan_shards`, :func:`load_vectors`).
* :mod:`~purchasing_power.embedding.encoder`: texts -> vectors (:func:`embed_texts`) with
  shape-stable batching, so a text's vector is bit-identical whatever it is embedded with.
* :mod:`~purchasing_power.embedding.packed_bert`: the packed (padding-free) BERT forward.
* :mod:`~purchasing_power.embedding.device`: device and compute precision.
* :mod:`~purchasing_power.embedding.model_ref`: which model folder, its revision, cache keys.

Importing this package loads numpy, not torch or transformers: those are imported when a text is
embedded.
"""

from __future__ import annotations

from purchasing_power.embedding.cache import EmbeddingCache, embed_new, load_vectors, plan_shards, read_precision, split_texts
from purchasing_power.embedding.device import cpu_has_native_bf16, resolve_device, resolve_precision
from purchasing_power.embedding.encoder import (
    CPU_BATCH_TOKENS,
    CUDA_BATCH_SCALE,
    CUDA_BATCH_TOKENS,
    embed_texts,
    length_grid,
    padded_length,
    rows_per_batch,
)
from purchasing_power.embedding.model_ref import (
    VECTOR_RECIPE,
    ModelRef,
    model_max_length,
    resolve_model,
    revision_cache_dir,
    text_key,
)

__all__ = [
    "CPU_BATCH_TOKENS",
    "CUDA_BATCH_SCALE",
    "CUDA_BATCH_TOKENS",
    "VECTOR_RECIPE",
    "EmbeddingCache",
    "ModelRef",
    "cpu_has_native_bf16",
    "embed_new",
    "embed_texts",
    "length_grid",
    "load_vectors",
    "model_max_length",
    "padded_length",
    "plan_shards",
    "read_precision",
    "resolve_device",
    "resolve_model",
    "resolve_precision",
    "revision_cache_dir",
    "rows_per_batch",
    "split_texts",
    "text_key",
]
