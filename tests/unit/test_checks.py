"""The day's volume check: no rows, low volume against the trailing median, and what a mode does."""

from __future__ import annotations

from datetime import date, timedelta

from purchasing_power.checks import LOW_VOLUME, NO_ROWS, OFF, OK, rows_by_day, volume_check

D = date(2024, 6, 30)


def _history(rows: int = 100, days: int = 40) -> dict[date, int]:
    return {D - timedelta(days=i): rows for i in range(1, days + 1)}


def test_a_normal_day_is_ok_and_a_thin_one_is_flagged():
    ok = volume_check({**_history(), D: 90}, D, min_share=0.2, window_days=28)
    assert ok["status"] == OK and not ok["flagged"] and ok["trailing_median"] == 100 and ok["share"] == 0.9
    assert ok["trailing_days"] == 28
    thin = volume_check({**_history(), D: 19}, D, min_share=0.2, window_days=28)
    assert thin["status"] == LOW_VOLUME and thin["flagged"] and not thin["fails"]
    assert "19 rows for 2024-06-30: 19% of the trailing median of 100" in thin["message"]
    edge = volume_check({**_history(), D: 20}, D, min_share=0.2, window_days=28)
    assert edge["status"] == OK


def test_a_day_without_rows_is_flagged_and_fails_only_in_fail_mode():
    warn = volume_check(_history(), D, min_share=0.2, window_days=28)
    assert warn["status"] == NO_ROWS and warn["flagged"] and not warn["fails"] and warn["rows"] == 0
    fail = volume_check(_history(), D, min_share=0.2, window_days=28, mode="fail")
    assert fail["fails"] and "no rows for 2024-06-30" in fail["message"]
    off = volume_check(_history(), D, min_share=0.2, window_days=28, mode="off")
    assert off["status"] == OFF and not off["flagged"] and not off["fails"]


def test_days_without_rows_count_as_zero_but_only_inside_the_sources_span():
    # six days of 70 rows a week, the seventh empty (UCI has no Saturday sales): median 70
    rows = {D - timedelta(days=i): (0 if i % 7 == 0 else 70) for i in range(1, 60)}
    rows = {d: n for d, n in rows.items() if n}  # empty days have no raw partition at all
    assert volume_check({**rows, D: 70}, D, min_share=0.2, window_days=28)["trailing_median"] == 70
    # a source that began three days ago: only those days are compared with
    young = {D - timedelta(days=i): 50 for i in range(1, 4)}
    check = volume_check({**young, D: 5}, D, min_share=0.2, window_days=28)
    assert check["trailing_days"] == 3 and check["status"] == LOW_VOLUME
    first = volume_check({D: 5}, D, min_share=0.2, window_days=28)  # the first day: nothing to compare with
    assert first["status"] == OK and first["trailing_median"] is None


def test_rows_come_from_the_raw_manifest():
    manifest = {"days": {"2024-06-29": {"rows": 12, "hash": "a"}, "2024-06-30": {"rows": 0, "hash": "b"}, "2024-06-28": {}}}
    assert rows_by_day(manifest) == {date(2024, 6, 29): 12, date(2024, 6, 30): 0}
    assert rows_by_day({}) == {}
