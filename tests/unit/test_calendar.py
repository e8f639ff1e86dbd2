"""Which day a run covers (logical date D covers day D), and which runs of a backfill's range
would be reprocessed with a conf other than the backfill's."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from purchasing_power.calendar import resolve_day, stale_runs

UTC = timezone.utc


# -- resolve_day ------------------------------------------------------------------------------
def test_day_param_wins():
    logical = datetime(2024, 1, 10, tzinfo=UTC)
    assert resolve_day("2011-08-31", logical, logical + timedelta(days=1)) == date(2011, 8, 31)
    assert resolve_day("2011-08-31", None, None) == date(2011, 8, 31)


def test_scheduled_and_backfill_runs_cover_the_day_of_their_logical_date():
    # CronDataIntervalTimetable: logical date D 00:00 = data_interval_start; the run fires at D+1 00:00
    for d in (date(2011, 9, 1), date(2011, 9, 30), date(2010, 5, 31), date(2012, 1, 1)):
        start = datetime(d.year, d.month, d.day, tzinfo=UTC)
        assert resolve_day(None, start, start + timedelta(days=1)) == d
        assert resolve_day("", start, None) == d


def test_a_logical_date_is_read_in_utc():
    # 2011-09-01 00:00 UTC written with another offset, and a naive one (taken as UTC)
    assert resolve_day(None, datetime(2011, 9, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))), None) == date(2011, 9, 1)
    assert resolve_day(None, datetime(2011, 9, 1), None) == date(2011, 9, 1)
    # 2011-08-31 22:00 UTC, i.e. midnight in UTC+2: a logical date inside a day
    assert resolve_day(None, datetime(2011, 9, 1, 0, 0, tzinfo=timezone(timedelta(hours=2))), None) == date(2011, 8, 30)


def test_a_manual_run_triggered_now_covers_the_last_complete_day():
    # the trigger form fills the logical date with the current time: that day is not over yet
    assert resolve_day(None, datetime(2024, 6, 15, 10, 30, tzinfo=UTC), datetime(2024, 6, 15, 10, 30, tzinfo=UTC)) == date(2024, 6, 14)
    # no logical date at all: the day before the time the run was queued for
    assert resolve_day(None, None, datetime(2024, 6, 15, 10, 30, tzinfo=UTC)) == date(2024, 6, 14)
    assert resolve_day(None, None, datetime(2024, 6, 15, 0, 0, tzinfo=UTC)) == date(2024, 6, 14)


def test_resolve_day_errors():
    with pytest.raises(ValueError, match="Param 'day' must be YYYY-MM-DD"):
        resolve_day("31/08/2011", datetime(2011, 9, 1, tzinfo=UTC), None)
    with pytest.raises(ValueError, match="no 'day' Param and no logical date"):
        resolve_day(None, None, None)


# -- stale_runs: a backfill must not reprocess a run with another conf --------------------------
DEFAULTS = {"day": None, "source": "", "column_map": {}, "model": "all-MiniLM-L6-v2", "force_retrain": False}


def _run(day: str, conf: dict | None, state: str = "success", run_id: str | None = None) -> dict:
    return {"dag_run_id": run_id or f"manual__{day}T00:00:00+00:00", "logical_date": f"{day}T00:00:00Z",
            "state": state, "conf": conf}


def test_a_run_with_another_source_is_stale():
    runs = [_run("2011-09-01", {"day": "2011-09-01", "source": "/a.csv"}), _run("2011-09-02", {})]
    stale = stale_runs(runs, {"source": "/b.csv"}, "completed", DEFAULTS)
    assert [r["dag_run_id"] for r in stale] == ["manual__2011-09-01T00:00:00+00:00", "manual__2011-09-02T00:00:00+00:00"]
    # the same source: nothing stale (the run's own day in its conf changes nothing)
    assert stale_runs(runs[:1], {"source": "/a.csv"}, "completed", DEFAULTS) == []


def test_defaults_and_the_runs_own_day_are_not_differences():
    runs = [
        _run("2011-09-01", {"day": "2011-09-01"}),  # make run DAY=2011-09-01
        _run("2011-09-02", None),  # a scheduled run
        _run("2011-09-03", dict(DEFAULTS)),  # the trigger form sends every Param, defaults included
        _run("2011-09-04", {"day": None, "force_retrain": False}),
        _run("2011-09-05", {"day": ""}),
    ]
    assert stale_runs(runs, {}, "completed", DEFAULTS) == []


def test_a_run_covering_another_day_is_stale():
    # e.g. a run made when logical date L covered L - 1: it computes 2011-08-31 at logical date 09-01
    runs = [_run("2011-09-01", {"day": "2011-08-31"}, run_id="manual__2011-09-01T00:00:00+00:00")]
    assert stale_runs(runs, {}, "completed", DEFAULTS) == runs
    assert stale_runs([_run("2011-09-02", {"force_retrain": True})], {}, "completed", DEFAULTS) != []


def test_only_runs_the_backfill_would_reprocess_count():
    runs = [_run("2011-09-01", {"source": "/a.csv"}, "success"), _run("2011-09-02", {"source": "/a.csv"}, "failed"),
            _run("2011-09-03", {"source": "/a.csv"}, "running"), _run("2011-09-04", {"source": "/a.csv"}, "queued")]
    ids = lambda rs: [r["logical_date"][:10] for r in rs]  # noqa: E731
    assert ids(stale_runs(runs, {}, "completed", DEFAULTS)) == ["2011-09-01", "2011-09-02"]
    assert ids(stale_runs(runs, {}, "failed", DEFAULTS)) == ["2011-09-02"]
    assert stale_runs(runs, {}, "none", DEFAULTS) == []
    with pytest.raises(ValueError, match="reprocess behaviour"):
        stale_runs(runs, {}, "sometimes", DEFAULTS)


def test_backfill_check_refuses_or_replaces_the_stale_runs():
    """``make backfill``'s check over the REST API (``tools/airflow_rest.py backfill-check``)."""
    import io

    from airflow_rest import backfill_check

    class FakeAPI:
        def __init__(self) -> None:
            self.runs = [_run("2011-09-01", {"day": "2011-09-01", "source": "/a.csv"}), _run("2011-09-02", {})]
            self.deleted: list[str] = []

        def dag_runs(self, dag_id, from_date, to_date):
            assert (dag_id, from_date, to_date) == ("d", "2011-09-01", "2011-09-30")
            return [r for r in self.runs if r["dag_run_id"] not in self.deleted]

        def param_defaults(self, dag_id):
            return dict(DEFAULTS)

        def delete_dag_run(self, dag_id, run_id):
            self.deleted.append(run_id)

    api, out = FakeAPI(), io.StringIO()
    assert backfill_check(api, "d", "2011-09-01", "2011-09-30", {}, "completed", out=out) == 1
    text = out.getvalue()
    assert "manual__2011-09-01T00:00:00+00:00" in text and '"source": "/a.csv"' in text
    assert "REPLACE_STALE=1" in text and "REPROCESS=none" in text and api.deleted == []
    assert backfill_check(api, "d", "2011-09-01", "2011-09-30", {}, "none", out=io.StringIO()) == 0
    assert backfill_check(api, "d", "2011-09-01", "2011-09-30", {"source": "/a.csv"}, "completed", out=io.StringIO()) == 1
    assert backfill_check(api, "d", "2011-09-01", "2011-09-30", {}, "completed", replace_stale=True, out=io.StringIO()) == 0
    assert api.deleted == ["manual__2011-09-01T00:00:00+00:00"]
    assert backfill_check(api, "d", "2011-09-01", "2011-09-30", {}, "completed", out=io.StringIO()) == 0
