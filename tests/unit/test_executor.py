"""The preloading LocalExecutor: what it imports before forking, and that it stays a LocalExecutor."""

from __future__ import annotations

import importlib
import sys

from airflow.executors.local_executor import LocalExecutor

from purchasing_power.executor import PRELOAD_MODULES, PreloadingLocalExecutor, preload_modules


def test_it_is_a_local_executor():
    assert issubclass(PreloadingLocalExecutor, LocalExecutor) and PreloadingLocalExecutor.is_local


def test_every_default_module_exists():
    missing = [m for m in PRELOAD_MODULES if importlib.util.find_spec(m) is None]
    assert missing == []


def test_env_override_and_a_broken_module_is_left_out(monkeypatch, caplog):
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    took = preload_modules({"PURCHASING_POWER_PRELOAD": "colorsys, no_such_module_xyz ,"})
    assert list(took) == ["colorsys"] and "colorsys" in sys.modules
    assert "no_such_module_xyz" in caplog.text


def test_empty_override_preloads_nothing():
    assert preload_modules({"PURCHASING_POWER_PRELOAD": ""}) == {}
