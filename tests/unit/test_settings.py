"""Settings: environment, run conf (the DAG's Params only), code overrides, validation.

Which day a run covers is tested in test_calendar.py."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from purchasing_power import settings as settings_mod
from purchasing_power.errors import InputError
from purchasing_power.settings import CONF_KEYS, DEFAULT_EMBED_MODEL, Settings

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


def test_with_conf_keeps_defaults_for_none_and_empty_values(base):
    s = base.with_conf({"source": "", "model": None, "day": "2011-08-31", "column_map": None, "force_retrain": None})
    assert s == base
    assert base.with_conf(None) is base
    assert base.with_conf({}) is base


@pytest.mark.parametrize(
    "conf",
    [
        {"storage": "/elsewhere"},
        {"storage": "s3://attacker-bucket/pp"},
        {"airflow_thing": 1},
        {"use_text": False},
        {"seed": 7, "source": "/ok.csv"},
        {"embed_model": "/models/x"},  # the Param is ``model``
    ],
)
def test_with_conf_refuses_keys_the_dag_does_not_declare(base, conf):
    """A user allowed only to trigger the DAG must not redirect storage or change how models are
    fitted: conf may carry the DAG's Params only, anything else names itself and the allowed keys."""
    bad = sorted(k for k in conf if k not in CONF_KEYS)
    with pytest.raises(InputError, match=f"run conf key\\(s\\) {bad[0]!r}.*not allowed: conf may set only day, source, column_map, model, force_retrain"):
        base.with_conf(conf)


def test_storage_comes_only_from_the_environment(clean_env, tmp_path):
    from purchasing_power.pipeline import settings_for

    clean_env.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "deployment"))
    with pytest.raises(ValueError, match="'storage'.*not allowed"):
        settings_for({"storage": str(tmp_path / "elsewhere"), "day": "2011-08-31"})
    assert settings_for({"day": "2011-08-31", "source": "/s.csv"}).storage == str(tmp_path / "deployment")


def test_conf_keys_are_exactly_the_params_the_dag_declares():
    """The DAG declares its Params in code: parse it (no Airflow import) and compare."""
    dag_file = Path(settings_mod.PROJECT_ROOT) / "dags" / "purchasing_power_daily.py"
    declared = set()
    for node in ast.walk(ast.parse(dag_file.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "params" and isinstance(node.value, ast.Dict):
            declared |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    assert declared == set(CONF_KEYS)


def test_with_conf_sets_declared_params(base):
    s = base.with_conf({"source": "/other.csv", "force_retrain": True, "day": "2011-08-31"})
    assert (s.source, s.force_retrain) == ("/other.csv", True)
    assert s.storage == base.storage


def test_with_overrides_sets_any_field_from_code(base):
    s = base.with_overrides(seed=7, candidates="hgb,logreg", use_text=False, model="/models/m")
    assert (s.seed, s.candidates, s.use_text, s.embed_model) == (7, ("hgb", "logreg"), False, "/models/m")
    assert base.with_overrides(candidates=["logreg"]).candidates == ("logreg",)
    assert base.with_overrides() is base
    with pytest.raises(ValueError, match="unknown setting\\(s\\) 'sede'"):
        base.with_overrides(sede=1)


def test_settings_for_applies_conf_then_code_overrides(clean_env, tmp_path):
    from purchasing_power.pipeline import settings_for

    clean_env.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "d"))
    s = settings_for({"source": "/s.csv", "force_retrain": "true"}, {"use_text": False, "seed": "5"})
    assert (s.source, s.force_retrain, s.use_text, s.seed, s.storage) == ("/s.csv", True, False, 5, str(tmp_path / "d"))


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
        if set(conf) <= set(CONF_KEYS):
            base.with_conf(conf)
        else:  # fields run conf cannot set are validated the same way when code sets them
            base.with_overrides(**conf)


def test_validated_rejects_empty_storage():
    with pytest.raises(ValueError, match="storage root is empty"):
        dataclasses.replace(Settings(storage="/x"), storage="").validated()


def test_with_conf_coerces_untyped_conf_values():
    s = Settings().with_conf({"force_retrain": "false"}).with_overrides(seed="3", gate_min_lift="0.01", use_smote="true")
    assert s.force_retrain is False and s.use_smote is True
    assert s.seed == 3 and s.gate_min_lift == 0.01
    with pytest.raises(ValueError, match="force_retrain must be true or false"):
        Settings().with_conf({"force_retrain": "maybe"})
    with pytest.raises(ValueError, match="seed must be an integer"):
        Settings().with_overrides(seed="x")
