"""Model bundles: written with the sha256 of their bytes, unpickled only when the bytes still
match it, and read only from paths under the storage root."""

from __future__ import annotations

import hashlib
import pathlib
import pickle
from datetime import date

import pytest

from purchasing_power.errors import InputError
from purchasing_power.gate import deployed_bundle
from purchasing_power.model import ModelBundle, load_bundle, save_bundle
from purchasing_power.storage import BUNDLE_HASH_SUFFIX, Storage

ANCHOR = date(2011, 8, 31)


class Payload:
    """What an attacker would store as a "bundle": unpickling it writes a file."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "code ran"))


@pytest.fixture
def store(tmp_path) -> Storage:
    return Storage.at(str(tmp_path / "data"))


def _saved(store: Storage, name: str = "candidate.pkl") -> tuple[str, ModelBundle]:
    bundle = ModelBundle(version="bgnbd-20110831-x", kind="baseline", info={"n": 1})
    path = store.path("models", ANCHOR, name)
    assert save_bundle(store, bundle, path) == path
    return path, bundle


def test_save_records_the_sha256_of_the_bytes_and_load_round_trips(store):
    path, bundle = _saved(store)
    data = pathlib.Path(path).read_bytes()
    assert pathlib.Path(path + BUNDLE_HASH_SUFFIX).read_text().strip() == hashlib.sha256(data).hexdigest()
    assert load_bundle(path) == bundle


def test_a_tampered_pickle_is_refused_before_it_is_unpickled(store, tmp_path):
    path, _ = _saved(store)
    marker = tmp_path / "pwned"
    pathlib.Path(path).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match=f"model bundle {path} does not match the sha256 recorded"):
        load_bundle(path)
    assert not marker.exists(), "the tampered pickle was unpickled"


def test_a_bundle_without_a_recorded_hash_is_refused(store, tmp_path):
    marker = tmp_path / "pwned"
    path = store.write_bytes(store.path("models", ANCHOR, "baseline.pkl"), pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match=f"model bundle {path} has no recorded sha256"):
        load_bundle(path)
    assert not marker.exists()


def test_a_decision_is_loaded_from_its_deployed_path_under_the_root(store):
    path, bundle = _saved(store)
    assert deployed_bundle({"deployed_path": path}, store) == bundle


@pytest.mark.parametrize("where", ["outside", "dotdot", "scheme"])
def test_a_decision_whose_deployed_path_leaves_the_storage_root_is_refused(store, tmp_path, where):
    """A decision record edited to point at a pickle elsewhere (even one with a matching hash
    beside it) is refused before anything is read."""
    evil_store = Storage.at(str(tmp_path / "elsewhere"))
    evil, _ = _saved(evil_store)
    stored = {
        "outside": evil,
        "dotdot": f"{store.root}/../elsewhere/models/ds={ANCHOR}/candidate.pkl",
        "scheme": "s3://attacker/models/candidate.pkl",
    }[where]
    with pytest.raises(InputError, match="outside the storage root"):
        deployed_bundle({"deployed_path": stored}, store)
