"""``PreloadingLocalExecutor``: Airflow's LocalExecutor with the pipeline's libraries imported
once, in the scheduler, before it forks its worker processes.

Why. On Linux the LocalExecutor forks its workers from the scheduler, and each task is a fork
of a worker (no new interpreter). Every task of this pipeline imports pandas and pyarrow, and
several import scipy, scikit-learn, imbalanced-learn or torch: 1-4 s of CPU per task on a small
machine, often more than the task's own work on an ordinary day. Importing them in the parent
makes every task start with them loaded (copy-on-write memory, shared between the processes).
That is what makes a whole-year backfill fit on a 2-core machine (``make bench-backfill``).

Use it with ``AIRFLOW__CORE__EXECUTOR=purchasing_power.executor.PreloadingLocalExecutor``
(the Makefile's default; ``include/`` must be on the scheduler's ``PYTHONPATH``). Nothing else
changes: it *is* a LocalExecutor (``airflow standalone`` accepts it). Modules are only imported,
never used, in the parent: no thread pool or device is started before the fork.

``PURCHASING_POWER_PRELOAD``: comma-separated modules to import instead of ``PRELOAD_MODULES``
(empty string: none).
"""

from __future__ import annotations

import importlib
import logging
import os
import time

from airflow.executors.local_executor import LocalExecutor

from purchasing_power.stages import EXTRA_STAGES, STAGES

log = logging.getLogger(__name__)

#: What the tasks import (the stage modules and, lazily, the libraries below).
PRELOAD_MODULES: tuple[str, ...] = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "scipy.optimize",
    "scipy.special",
    "scipy.stats",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.decomposition",
    "imblearn.over_sampling",
    "imblearn.pipeline",
    "torch",
    "transformers",
    # transformers imports model code lazily: ~3 s on first use of a BERT-type model otherwise
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.bert.modeling_bert",
    "transformers.models.bert.tokenization_bert",
    # what every task imports again when it parses the DAG file (the SDK's lazy decorators)
    "airflow.sdk.definitions.decorators",
    "airflow.providers.standard.decorators.python",
    "airflow.providers.standard.operators.python",
    "jsonschema",
    "purchasing_power.pipeline",
    # the stage modules, and through them the whole library
    *sorted({target.split(":")[0] for target in (*STAGES.values(), *EXTRA_STAGES.values())}),
)


def preload_modules(env: dict[str, str] | None = None) -> dict[str, float]:
    """Import the modules to preload; returns seconds per module. A module that fails to import
    is logged and left out (the task that needs it will then raise the real error itself)."""
    env = os.environ if env is None else env
    names = PRELOAD_MODULES
    if "PURCHASING_POWER_PRELOAD" in env:
        names = tuple(m.strip() for m in env["PURCHASING_POWER_PRELOAD"].split(",") if m.strip())
    took: dict[str, float] = {}
    for name in names:
        t = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - logged; the task importing it reports the error
            log.exception("preload: cannot import %s", name)
            continue
        took[name] = round(time.perf_counter() - t, 3)
    return took


class PreloadingLocalExecutor(LocalExecutor):
    """A LocalExecutor whose workers (and so every task, a fork of a worker) start with
    ``PRELOAD_MODULES`` imported."""

    def start(self) -> None:
        took = preload_modules()
        log.info("preloaded %d modules in %.1f s before forking workers: %s", len(took), sum(took.values()), took)
        super().start()
