"""Settings: environment, run conf overrides, validation, and the day a run covers."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta, timezone

import pytest

from purchasing_power import settings as settings_mod
from purchasing_power.calendar import resolve_day
from purchasing_power.settings import DEFAULT_EMBED_MODEL, Settings

ENV_VARS = (
    "PURCHASING_POWER_STORAGE",
    "PURCHASING_POWER_SOURCE",
    "PURCHASING_POWER_COLUMN_MAP",
    "PURCHASING_POWER_EMBED_MODEL",
    "PURCHASING_POWER_EMBED_DEVICE",
    "PURCHASING_POWER_EMBED_PRECISION",
)


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- from_env ---------------------------------------------------------------------------------


def test_from_env_reads_storage_and_source(clean_env, tmp_path):
    clean_env.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "store"))
    clean_env.setenv("PURCHASING_POWER_SOURCE", "s3://bucket/tx.parquet")
    s = Settings.from_env()
    assert s.storage == str(tmp_path / "store")
    assert s.source == "s3://bucket/tx.parquet"
    assert s.resolved_source == "s3://bucket/tx.parquet"
    assert s.column_map == {} and s.embed_model == DEFAULT_EMBED_MODEL and s.embed_device == "auto"


def test_from_env_defaults_when_unset_or_empty(clean_env):
    clean_env.setenv("PURCHASING_POWER_SOURCE", "")
    s = Settings.from_env()
    assert s.storage == str(settings_mod.PROJECT_ROOT / "data")
    assert s.source == ""
    assert s.resolved_source == f"{settings_mod.PROJECT_ROOT / 'data'}/demo/ds=2024-12-31/transactions.parquet"


def test_from_env_with_explicit_mapping_ignores_os_environ(clean_env):
    clean_env.setenv("PURCHASING_POWER_SOURCE", "/from/os/environ.parquet")
    s = Settings.from_env(
        {
            "PURCHASING_POWER_STORAGE": "memory://pp",
            "PURCHASING_POWER_COLUMN_MAP": '{"Invoice": "InvoiceNo", "Price": "UnitPrice"}',
            "PURCHASING_POWER_EMBED_MODEL": "/models/minilm",
            "PURCHASING_POWER_EMBED_DEVICE": "cpu",
            "PURCHASING_POWER_EMBED_PRECISION": "float32",
        }
    )
    assert s.storage == "memory://pp"
    assert s.source == ""
    assert s.column_map == {"Invoice": "InvoiceNo", "Price": "UnitPrice"}
    assert s.embed_model == "/models/minilm"
    assert s.embed_device == "cpu"
    assert s.embed_precision == "float32"


def test_from_env_rejects_bad_values(clean_env):
    clean_env.setenv("PURCHASING_POWER_EMBED_DEVICE", "gpu")
    with pytest.raises(ValueError, match="embed_device must be auto, cpu or cuda, got 'gpu'"):
        Settings.from_env()
    clean_env.setenv("PURCHASING_POWER_EMBED_DEVICE", "cpu")
    clean_env.setenv("PURCHASING_POWER_COLUMN_MAP", "{Invoice: InvoiceNo}")
    with pytest.raises(ValueError, match="column_map is not valid JSON"):
        Settings.from_env()


# -- with_conf --------------------------------------------------------------------------------


@pytest.fixture
def base(tmp_path) -> Settings:
    return Settings(storage=str(tmp_path / "data"), source="/src/tx.parquet")


def test_with_conf_model_alias_sets_embed_model(base):
    s = base.with_conf({"model": "/models/other"})
    assert s.embed_model == "/models/other"
    assert base.embed_model == DEFAULT_EMBED_MODEL  # frozen: the original is unchanged
    assert s.storage == base.storage and s.source == base.source


def test_with_conf_column_map_as_json_string_or_dict(base):
    as_text = base.with_conf({"column_map": '{"Invoice": "InvoiceNo", "Customer ID": "CustomerID"}'})
    as_dict = base.with_conf({"column_map": {"Invoice": "InvoiceNo", "Customer ID": "CustomerID"}})
    assert as_text.column_map == as_dict.column_map == {"Invoice": "InvoiceNo", "Customer ID": "CustomerID"}
    assert as_text == as_dict
    assert as_text.source_id == as_dict.source_id != base.source_id
    assert base.with_conf({"column_map": "  "}).column_map == {}


def test_with_conf_keeps_defaults_for_none_empty_and_unknown_keys(base):
    s = base.with_conf({"source": "", "model": None, "day": "2011-08-31", "airflow_thing": 1})
    assert s == base
    assert base.with_conf(None) is base
    assert base.with_conf({}) is base


def test_with_conf_overrides_typed_fields(base):
    s = base.with_conf({"source": "/other.csv", "force_retrain": True, "seed": 7, "candidates": "hgb,logreg"})
    assert (s.source, s.force_retrain, s.seed, s.candidates) == ("/other.csv", True, 7, ("hgb", "logreg"))
    assert base.with_conf({"candidates": ["logreg"]}).candidates == ("logreg",)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"embed_device": "tpu"}, "embed_device must be auto, cpu or cuda"),
        ({"embed_precision": "int8"}, "embed_precision must be auto, float32, bfloat16 or float16"),
        ({"column_map": "{not json"}, "column_map is not valid JSON"),
        ({"column_map": "[1, 2]"}, "column_map must be a JSON object, got list"),
        ({"column_map": {"Invoice": "Bogus"}}, r"column_map targets \['Bogus'\] are not canonical"),
        ({"column_map": {"Invoice": 3}}, "column_map must map strings to strings"),
        ({"tier_high_share": 0.7, "tier_medium_share": 0.5}, "tier_high_share \\+ tier_medium_share must be <= 1"),
        ({"tier_high_share": 0.0}, "tier shares must be fractions"),
        ({"purchase_horizon_days": 0}, "purchase_horizon_days must be >= 1"),
    ],
)
def test_with_conf_rejects_invalid_values_clearly(base, conf, message):
    with pytest.raises(ValueError, match=message):
        base.with_conf(conf)


def test_validated_rejects_empty_storage():
    with pytest.raises(ValueError, match="storage root is empty"):
        dataclasses.replace(Settings(storage="/x"), storage="").validated()


# -- resolve_day ------------------------------------------------------------------------------


UTC = timezone.utc


def test_resolve_day_param_wins():
    logical = datetime(2024, 1, 10, tzinfo=UTC)
    assert resolve_day("2011-08-31", logical, logical + timedelta(hours=1)) == date(2011, 8, 31)
    assert resolve_day("2011-08-31", None, None) == date(2011, 8, 31)


def test_resolve_day_scheduled_run_covers_the_day_before_logical_date():
    # @daily fires at 00:00 of D+1; the run's logical date is D+1 00:00 UTC.
    assert resolve_day(None, datetime(2011, 9, 1, 0, 0, tzinfo=UTC), datetime(2011, 9, 1, 0, 5, tzinfo=UTC)) == date(2011, 8, 31)
    assert resolve_day("", datetime(2011, 3, 1, tzinfo=UTC), None) == date(2011, 2, 28)
    assert resolve_day(None, datetime(2012, 1, 1, 23, 59), None) == date(2011, 12, 31)


def test_resolve_day_manual_run_without_logical_date_uses_run_after():
    assert resolve_day(None, None, datetime(2024, 6, 15, 10, 30, tzinfo=UTC)) == date(2024, 6, 14)


def test_resolve_day_errors():
    with pytest.raises(ValueError, match="Param 'day' must be YYYY-MM-DD, got '31/08/2011'"):
        resolve_day("31/08/2011", datetime(2011, 9, 1, tzinfo=UTC), None)
    with pytest.raises(ValueError, match="no 'day' Param and no logical date"):
        resolve_day(None, None, None)


def test_with_conf_coerces_untyped_conf_values():
    s = Settings().with_conf({"force_retrain": "false", "seed": "3", "gate_min_lift": "0.01", "use_smote": "true"})
    assert s.force_retrain is False and s.use_smote is True
    assert s.seed == 3 and s.gate_min_lift == 0.01
    with pytest.raises(ValueError, match="force_retrain must be true or false"):
        Settings().with_conf({"force_retrain": "maybe"})
    with pytest.raises(ValueError, match="seed must be an integer"):
        Settings().with_conf({"seed": "x"})
