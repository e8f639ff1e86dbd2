"""One run of a day at a time: a lease on the day, kept in storage next to the day's reports.

Two Dag runs of one day (a manual run beside the scheduled one, a ``force_retrain`` rerun) share
the day's files: one run's ``embed_plan`` deletes the shards another run's ``embed`` reads, one
stages ``scores/ds=D`` and the other publishes it. The first task of a run takes the day's lease
``runs/ds=D/lease.json`` (its run id and an expiry), each later task of the same run renews it,
and ``publish`` releases it. A task of another run that finds a live lease fails with
:class:`DayBusy` naming the holding run and the expiry (its retries try again later); a lease
past its expiry (a run that crashed) is taken over.

Taking a free day is atomic-ish over any storage (local folder or object store): the claim is
written whole (atomic write), and after ``settle`` seconds read back; only the run whose claim is
still there proceeds. Two runs that both found the day free both write; the later write wins and
the earlier writer, reading back the winner's claim, fails. Renewing one's own live lease needs
no settle time.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable

from purchasing_power.storage import Storage

log = logging.getLogger(__name__)

#: The lease's file in the day's ``runs`` partition (beside the stages' reports).
LEASE_FILE = "lease.json"
#: How long a lease lives after its last renewal: longer than any one task of a run and the wait
#: for its next one (the environment variable ``PURCHASING_POWER_DAY_LEASE_SECONDS`` overrides).
DEFAULT_TTL = timedelta(hours=1)
#: Seconds between writing a claim and reading it back: longer than another writer needs between
#: its read and its write (milliseconds locally, well under this on an object store).
SETTLE_S = 0.2


class DayBusy(RuntimeError):
    """Another run holds the day's lease; ``holder`` is its lease."""

    def __init__(self, message: str, holder: Lease) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Lease:
    day: date
    run_id: str
    expires_at: datetime
    stage: str = ""

    def live(self, now: datetime) -> bool:
        return self.expires_at > now

    def to_json(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "run_id": self.run_id, "stage": self.stage,
                "expires_at": self.expires_at.isoformat()}


def lease_path(store: Storage, day: date) -> str:
    return store.path("runs", day, LEASE_FILE)


def ttl_from_env(env: Any = os.environ) -> timedelta:
    """The lease lifetime: ``PURCHASING_POWER_DAY_LEASE_SECONDS`` if set, else :data:`DEFAULT_TTL`."""
    raw = env.get("PURCHASING_POWER_DAY_LEASE_SECONDS")
    if not raw:
        return DEFAULT_TTL
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"PURCHASING_POWER_DAY_LEASE_SECONDS must be a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        raise ValueError(f"PURCHASING_POWER_DAY_LEASE_SECONDS must be positive, got {raw!r}")
    return timedelta(seconds=seconds)


def read_lease(store: Storage, day: date) -> Lease | None:
    """The day's lease, or None when there is none (or it cannot be read: it must not block the
    day forever)."""
    path = lease_path(store, day)
    try:
        store.fs.invalidate_cache(path)  # object stores: never an old listing's answer
    except Exception:  # pragma: no cover - file systems without a cache
        pass
    try:
        raw = store.read_json(path)
        return Lease(day=date.fromisoformat(raw["day"]), run_id=str(raw["run_id"]), stage=str(raw.get("stage", "")),
                     expires_at=datetime.fromisoformat(raw["expires_at"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the unreadable day lease %s: %s", path, exc)
        return None


def acquire(store: Storage, day: date, run_id: str, *, stage: str = "", ttl: timedelta = DEFAULT_TTL,
            now: datetime | None = None, settle: float = SETTLE_S, sleep: Callable[[float], None] = time.sleep) -> Lease:
    """Take or renew ``run_id``'s lease on ``day`` until ``now + ttl``; raise :class:`DayBusy`
    when another run holds a live one (before writing anything, or after reading back a claim
    that a concurrent taker overwrote)."""
    now = now or datetime.now(timezone.utc)
    current = read_lease(store, day)
    if current is not None and current.run_id != run_id and current.live(now):
        raise _busy(store, day, run_id, current)
    renewing = current is not None and current.run_id == run_id and current.live(now)
    if current is not None and not renewing and current.run_id != run_id:
        log.warning("day %s: taking over the expired lease of run %s (expired %s)", day, current.run_id, current.expires_at.isoformat())
    mine = Lease(day=day, run_id=run_id, expires_at=now + ttl, stage=stage)
    store.write_json(mine.to_json(), lease_path(store, day))
    if renewing:
        return mine
    sleep(settle)
    held = read_lease(store, day)
    if held is None or held.run_id != run_id:
        raise _busy(store, day, run_id, held or mine)
    return mine


def release(store: Storage, day: date, run_id: str) -> bool:
    """Drop ``run_id``'s lease on ``day``; True if it held it (another run's lease stays)."""
    current = read_lease(store, day)
    if current is None or current.run_id != run_id:
        return False
    path = lease_path(store, day)
    try:
        store.fs.rm(path)
    except FileNotFoundError:
        return False
    return True


def _busy(store: Storage, day: date, run_id: str, holder: Lease) -> DayBusy:
    return DayBusy(
        f"day {day} is being processed by run {holder.run_id!r} (lease {lease_path(store, day)}, held until "
        f"{holder.expires_at.isoformat()}): run {run_id!r} must not write the same day's files at the same "
        "time, so this task fails and its retries try again. Let that run finish (or clear and rerun it "
        "instead of starting another); if it is no longer running, its lease expires at that time, or "
        "delete the lease file.",
        holder,
    )
