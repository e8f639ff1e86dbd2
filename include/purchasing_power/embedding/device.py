"""Where and in what precision the encoder runs: device, compute dtype, cores, device name.

Vectors depend on the compute precision (``embed_precision``: float16 on CUDA, bfloat16 on CPUs
with native bf16 matmuls, float32 elsewhere; cosine >= 0.9999 between them), so the embedding
cache keeps each precision apart (see :mod:`purchasing_power.embedding.cache`). They may also
depend on the device kind, batch settings and thread count at one precision: keep those fixed for
a storage root (they are, through :class:`~purchasing_power.settings.Settings`, on one kind of
machine).
"""

from __future__ import annotations

import functools
import logging
import os

from purchasing_power.settings import EMBED_PRECISIONS

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu`` (with a warning); a ``cuda``
    request without a GPU also falls back to ``cpu``. Anything else but ``cpu`` is an error.
    ``cpu`` does not import torch (a cache hit on a CPU worker needs none)."""
    device = (device or "auto").lower()
    if device == "cpu":
        return "cpu"
    if device != "auto" and not device.startswith("cuda"):
        raise ValueError(f"embed device must be auto, cpu or cuda, got {device!r}")
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        log.warning("embed: no CUDA device here, falling back to CPU (%d threads)", torch.get_num_threads())
        return "cpu"
    if not torch.cuda.is_available():
        log.warning("CUDA requested but not available; falling back to CPU")
        return "cpu"
    return device


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


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), the default thread count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def device_name(dev: str) -> str:
    """A human-readable name of the GPU or CPU, for reports."""
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
