"""The per-day lease: one run of a day at a time writes the day's files."""

from __future__ import annotations

import json
import re
import threading
from datetime import date, datetime, timedelta, timezone

import pytest

from purchasing_power.lease import DayBusy, Lease, acquire, lease_path, read_lease, release
from purchasing_power.storage import RAW_FILE, Storage

DAY = date(2024, 6, 30)
T0 = datetime(2024, 7, 1, 0, 5, tzinfo=timezone.utc)
A, B = "scheduled__2024-06-30T00:00:00+00:00", "manual__2024-07-01T09:12:00+00:00"


@pytest.fixture
def store(tmp_path) -> Storage:
    return Storage.at(str(tmp_path / "data"))


def no_sleep(_: float) -> None:
    pass


def test_the_first_task_takes_the_day_and_the_runs_next_tasks_renew_it(store):
    lease = acquire(store, DAY, A, stage="extract", ttl=timedelta(hours=1), now=T0, sleep=no_sleep)
    assert (lease.run_id, lease.expires_at) == (A, T0 + timedelta(hours=1))
    on_disk = json.loads(open(lease_path(store, DAY)).read())
    assert on_disk["run_id"] == A and on_disk["stage"] == "extract"
    assert lease_path(store, DAY).endswith("runs/ds=2024-06-30/lease.json")

    slept: list[float] = []
    later = T0 + timedelta(minutes=50)
    renewed = acquire(store, DAY, A, stage="score", ttl=timedelta(hours=1), now=later, sleep=slept.append)
    assert renewed.expires_at == later + timedelta(hours=1) and read_lease(store, DAY).stage == "score"
    assert slept == [], "renewing one's own live lease needs no settle time"


def test_another_run_finding_a_live_lease_fails_naming_the_holder_and_the_expiry(store):
    acquire(store, DAY, A, stage="extract", ttl=timedelta(hours=1), now=T0, sleep=no_sleep)
    with pytest.raises(DayBusy) as exc:
        acquire(store, DAY, B, stage="extract", now=T0 + timedelta(minutes=10), sleep=no_sleep)
    msg = str(exc.value)
    assert A in msg and B in msg and "2024-07-01T01:05:00" in msg and str(DAY) in msg
    assert lease_path(store, DAY) in msg
    assert exc.value.holder.run_id == A
    assert read_lease(store, DAY).run_id == A  # untouched


def test_an_expired_lease_of_a_crashed_run_is_taken_over(store):
    acquire(store, DAY, A, stage="train", ttl=timedelta(hours=1), now=T0, sleep=no_sleep)
    taken = acquire(store, DAY, B, stage="extract", ttl=timedelta(hours=1), now=T0 + timedelta(hours=1, seconds=1), sleep=no_sleep)
    assert taken.run_id == B and read_lease(store, DAY).run_id == B
    # the crashed run, coming back, now finds B's live lease
    with pytest.raises(DayBusy, match=re.escape(B)):
        acquire(store, DAY, A, stage="evaluate", now=T0 + timedelta(hours=1, minutes=1), sleep=no_sleep)


def test_release_only_by_the_holder(store):
    assert release(store, DAY, A) is False  # nothing held
    acquire(store, DAY, A, now=T0, sleep=no_sleep)
    assert release(store, DAY, B) is False and read_lease(store, DAY).run_id == A
    assert release(store, DAY, A) is True and read_lease(store, DAY) is None
    acquire(store, DAY, B, now=T0, sleep=no_sleep)  # the day is free again


def test_an_unreadable_lease_does_not_block_the_day_forever(store):
    path = lease_path(store, DAY)
    store.write_bytes(path, b"{not json")
    assert read_lease(store, DAY) is None
    assert acquire(store, DAY, B, now=T0, sleep=no_sleep).run_id == B


def test_a_claim_overwritten_during_the_settle_time_is_lost(store):
    """Both runs found the day free; B's write lands after A's: A re-reads, sees B and fails."""
    def b_writes_meanwhile(_: float) -> None:  # B read the day free before A wrote
        store.write_json(Lease(DAY, B, T0 + timedelta(hours=2), "extract").to_json(), lease_path(store, DAY))

    with pytest.raises(DayBusy, match=re.escape(B)):
        acquire(store, DAY, A, stage="extract", now=T0, sleep=b_writes_meanwhile)
    assert read_lease(store, DAY).run_id == B


def test_race_two_runs_take_a_free_day_at_once_one_wins(store):
    """Two threads read the free day at the same moment, both write their claim; after the settle
    time exactly one finds its own claim and proceeds, the other fails naming the winner."""
    barrier = threading.Barrier(2)

    class SameMoment(Storage):
        def read_json(self, path):  # both readers pass this point together, before either writes
            if path.endswith("lease.json") and not getattr(tls, "passed", False):
                tls.passed = True
                barrier.wait(timeout=10)
            return super().read_json(path)

    tls = threading.local()
    racing = SameMoment(store.root)
    results: dict[str, object] = {}

    def take(run_id: str) -> None:
        try:
            results[run_id] = acquire(racing, DAY, run_id, stage="extract", now=T0, settle=0.3)
        except DayBusy as exc:
            results[run_id] = exc

    threads = [threading.Thread(target=take, args=(r,)) for r in (A, B)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [r for r, v in results.items() if not isinstance(v, DayBusy)]
    losers = [v for v in results.values() if isinstance(v, DayBusy)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert read_lease(store, DAY).run_id == winners[0]
    assert losers[0].holder.run_id == winners[0]


# -- the pipeline's hook: every task of an Airflow run passes its run id -------------------------
def test_a_stage_of_another_run_fails_before_writing_anything(settings_factory, monkeypatch):
    from purchasing_power.pipeline import run_stage

    settings = settings_factory()
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", settings.storage)
    store = Storage.at(settings.storage)
    day = date(2011, 8, 31)
    conf = {"day": day.isoformat(), "source": settings.source}
    acquire(store, day, A, stage="embed_plan", sleep=no_sleep)  # A's run is at work on the day
    with pytest.raises(DayBusy, match=re.escape(A)):
        run_stage("extract", conf, run_id=B)
    assert not store.exists(store.path("raw", day, RAW_FILE))
    assert not store.exists(store.path("runs", day, "extract.json"))
    # A's own tasks go on and renew it; without a run id (run_all, notebooks) nothing is held
    run_stage("extract", conf, run_id=A)
    assert read_lease(store, day).stage == "extract" and read_lease(store, day).run_id == A
    run_stage("clean", conf)
    assert read_lease(store, day).run_id == A


def test_publish_and_a_final_failure_release_the_day(settings_factory, monkeypatch):
    from purchasing_power.pipeline import day_lease, release_day_lease

    settings = settings_factory()
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", settings.storage)
    store = Storage.at(settings.storage)
    day_lease(settings, DAY, A, "score")
    day_lease(settings, DAY, A, "score", finished=True)  # only publish ends the run's hold
    assert read_lease(store, DAY).run_id == A
    day_lease(settings, DAY, A, "publish")
    day_lease(settings, DAY, A, "publish", finished=True)
    assert read_lease(store, DAY) is None

    day_lease(settings, DAY, B, "extract")
    release_day_lease({"day": DAY.isoformat()}, run_id=A)  # not A's: stays
    assert read_lease(store, DAY).run_id == B
    logical = datetime(DAY.year, DAY.month, DAY.day, tzinfo=timezone.utc)  # logical date D covers D
    release_day_lease({}, logical, logical + timedelta(days=1), run_id=B)
    assert read_lease(store, DAY) is None
