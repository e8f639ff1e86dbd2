"""Reading what earlier stages stored for a source: the clean history and point-in-time features.

:func:`load_clean_history` reads the daily clean partitions. :class:`RunData` is what the train,
evaluate, gate, score and report steps of one run read: the clean history through the run's day
(loaded on first use, so a step that only reads stored features, models or decisions never pays
for it), the text-vector lookup, and the feature store (features of a day are computed once and
stored; they depend only on the data before that day + 1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Callable

from purchasing_power.compact import CODE_VALUES, CODED, FEATURE_COLUMNS, CodeValues, compact_history, sale_lines
from purchasing_power.features import build_features, lookback_since
from purchasing_power.frames import release_arrow_memory, to_frame
from purchasing_power.settings import Settings
from purchasing_power.storage import CLEAN_FILE, FEATURE_PART_FILE, FEATURES_FILE, FEATURES_SAMPLE_FILE, TEXTS_CLEAN_FILE, Workspace

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def give_back_memory() -> None:
    """Return the C heap's and Arrow's free memory to the system (``malloc_trim`` only on glibc):
    frames freed by pandas stay in the heap otherwise, and the next work's arrays come on
    top of them in the peak RSS."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    release_arrow_memory()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def load_clean_history(
    settings: Settings,
    day: date,
    *,
    through: date | None = None,
    since: date | None = None,
    columns: list[str] | None = None,
    dictionary: list[str] | None = None,
) -> pd.DataFrame:
    """All clean rows with ``since`` <= invoice day <= ``through`` (default: from the first day
    through ``day``), concatenated in day order; ``columns``: only these; ``dictionary``: these
    text columns as categoricals."""
    store = Workspace.for_settings(settings).per_source
    return store.read_parquet_many(clean_paths(settings, through or day, since), columns=columns, dictionary=dictionary)


def clean_paths(settings: Settings, day: date, since: date | None = None, through: date | None = None) -> list[str]:
    """The daily clean partitions of ``since`` (default: the first) through ``through`` (default:
    ``day``), in day order (``day``'s must exist)."""
    store = Workspace.for_settings(settings).per_source
    days = [d for d in store.list_days("clean", CLEAN_FILE) if d <= day]
    if day not in days:
        raise FileNotFoundError(f"no clean partition for {day} under {store.path('clean')}: run clean first")
    return [store.path("clean", d, CLEAN_FILE) for d in days if (since is None or d >= since) and (through is None or d <= through)]


def sold_customers(store: Any, paths: list[str]) -> int:
    """How many customers have a valid sale line (:func:`compact.sale_lines`) in the clean
    partitions ``paths``, read a few partitions at a time (only the ids of each day's buyers are
    held, not the lines)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from purchasing_power.shards import read_tables

    def buyers(table: Any) -> Any:
        sold = pc.and_(pc.invert(table["is_cancellation"]), pc.greater(table["quantity"], 0))
        return pc.unique(table["customer_id"].filter(sold).combine_chunks())

    if not paths:
        return 0
    days = read_tables(store, paths, ["customer_id", "quantity", "is_cancellation"], buyers, what="clean partitions")
    return len(pc.unique(pa.chunked_array(days)))


def load_user_texts(settings: Settings, day: date) -> pd.DataFrame | None:
    """The clean user texts of every text day through ``day`` (``customer_id``, ``text_ts``,
    ``text``), or ``None`` when features use no user text (no texts source, or
    ``use_user_text`` off). Point in time is the features' job: they drop texts dated after
    their as-of day."""
    from purchasing_power.usertext import user_text_on

    if not user_text_on(settings):
        return None
    store = Workspace.for_settings(settings).per_source
    days = [d for d in store.list_days("texts_clean", TEXTS_CLEAN_FILE) if d <= day]
    if day not in days:
        raise FileNotFoundError(f"no clean user-text partition for {day} under {store.path('texts_clean')}: run clean first")
    return store.read_parquet_many([store.path("texts_clean", d, TEXTS_CLEAN_FILE) for d in days])


def text_vectors_key(settings: Settings, ws: Workspace | None = None) -> str:
    """Identity of the text vectors features are built with (model, revision and the compute
    precision readers take, :func:`embedding.read_precision`; which of product and user text), or
    ``notext``. (Which texts source is part of the source id.) Features and models stored under
    one key are never read under another: vectors of another precision recompute them."""
    from purchasing_power.usertext import user_text_on

    user = user_text_on(settings)
    if not settings.use_text and not user:
        return "notext"
    from purchasing_power.embedding import read_precision, resolve_model

    ref = resolve_model(settings.embed_model)
    precision, _ = read_precision((ws or Workspace.for_settings(settings)).root, ref, settings)
    parts = (f"{ref.model_id}\0{ref.revision}\0{precision or 'none'}" + ("" if settings.use_text else "\0noproduct")
             + ("\0user" if user else ""))
    return hashlib.sha256(parts.encode()).hexdigest()[:10]


def feature_key(settings: Settings, ws: Workspace | None = None) -> str:
    """The key stored features, their parts and model versions are kept under: the
    :func:`text_vectors_key`, and the feature lookback when there is one (``-lbN``): features
    and models of one are never read under another."""
    lookback = int(settings.feature_lookback_days)
    return text_vectors_key(settings, ws) + (f"-lb{lookback}" if lookback else "")


#: rows per row group of stored features: a reader of one customer shard streams them
#: (:func:`shards.read_file_shard`) instead of holding every customer's features
FEATURE_ROW_GROUP = 65_536


class ShardSpool:
    """The compact history (:func:`compact.compact_history`) through ``data.day``, split by
    customer shard (``settings.feature_shards``) into local files: one pass over the daily
    partitions (:func:`shards.spool_shards`) and one compaction per shard, in a temporary folder
    that goes with the object (or at exit); read back one shard at a time (:meth:`read`). What
    builds snapshot features in one process while holding one shard's rows, not the history
    (:meth:`RunData.features` with feature_shards > 1)."""

    def __init__(self, data: RunData) -> None:
        import os
        import tempfile

        import pyarrow as pa
        import pyarrow.parquet as pq

        from purchasing_power.shards import spool_shards

        self._folder = tempfile.TemporaryDirectory(prefix="purchasing-power-shards-")
        cols, text = data._feature_columns()
        root, description = self._folder.name, data.settings.use_text
        paths = clean_paths(data.settings, data.day, data.feature_since())
        split = spool_shards(data.ws.per_source, paths, int(data.settings.feature_shards), root, columns=cols)
        self.files: list[str] = []
        for k, files in enumerate(split):
            tx = to_frame(pa.concat_tables([pq.read_table(f, read_dictionary=text) for f in files], promote_options="permissive"))
            compact = compact_history(tx, description=description)
            del tx
            frame = os.path.join(root, f"compact-{k}.parquet")
            for column, values in compact.attrs.pop(CODE_VALUES).items():  # each coded column's texts, in code order
                pq.write_table(pa.table({"text": pa.array(values, type=pa.string())}), f"{frame}.{column}")
            compact.to_parquet(frame, index=False)
            del compact
            for f in files:
                os.remove(f)
            self.files.append(frame)

    def read(self, shard: int) -> pd.DataFrame:
        """Shard ``shard``'s compact history, in history order."""
        import numpy as np
        import pyarrow.parquet as pq

        frame = self.files[shard]
        tx = to_frame(pq.read_table(frame))
        tx.attrs[CODE_VALUES] = CodeValues(
            {c: np.asarray(pq.read_table(f"{frame}.{c}").column("text").to_numpy(zero_copy_only=False), dtype=object) for c in CODED})
        return tx


@dataclass
class RunData:
    """The stored data one run of ``day`` reads (see the module docstring)."""

    settings: Settings
    day: date
    ws: Workspace
    feature_key: str
    vectors: Any = None
    user_text: bool = False
    _tx: pd.DataFrame | None = None
    _compact: pd.DataFrame | None = None
    _texts: pd.DataFrame | None = None
    _spool: ShardSpool | None = None
    _features: dict[date, pd.DataFrame] = field(default_factory=dict)
    #: the earliest as-of day whose features the run builds (None: any): with a feature lookback
    #: (``settings.feature_lookback_days``), the clean partitions before its window are not read
    snapshots_from: date | None = None

    @classmethod
    def load(cls, settings: Settings, day: date, tx: pd.DataFrame | None = None, *,
             snapshots_from: date | None = None) -> RunData:
        ws = Workspace.for_settings(settings)
        key = feature_key(settings, ws)
        from purchasing_power.usertext import user_text_on

        user = user_text_on(settings)
        vectors = None
        if settings.use_text or user:
            from purchasing_power.embedding import load_vectors

            vectors = lambda texts: load_vectors(texts, ws.root, settings)  # noqa: E731
        return cls(settings=settings, day=day, ws=ws, feature_key=key, vectors=vectors, user_text=user, _tx=tx,
                   snapshots_from=snapshots_from)

    def _check_snapshot(self, as_of: date) -> None:
        if self.snapshots_from is not None and as_of < self.snapshots_from:
            raise ValueError(f"features as of {as_of} asked of a run that reads the history for snapshots from "
                             f"{self.snapshots_from} on (RunData.snapshots_from): they would miss lines")

    def feature_since(self) -> date | None:
        """The first day of clean partitions the run's features read: the lookback window of
        :attr:`snapshots_from` (``None``: every day)."""
        if self.snapshots_from is None:
            return None
        return lookback_since(self.snapshots_from, int(self.settings.feature_lookback_days))

    @property
    def texts(self) -> pd.DataFrame | None:
        """The clean user texts through the run's day (``None`` without user-text features)."""
        if self.user_text and self._texts is None:
            self._texts = load_user_texts(self.settings, self.day)
        return self._texts

    @property
    def tx(self) -> pd.DataFrame:
        """The clean history with invoice day <= the run's day."""
        if self._tx is None:
            self._tx = load_clean_history(self.settings, self.day)
        return self._tx

    def feature_history(self) -> pd.DataFrame:
        """What features are built from: the loaded history when there is one, else only the
        columns they read, text as codes (:func:`features.compact_history`; a fraction of the
        memory of :attr:`tx`), loaded once."""
        if self._tx is not None:
            return self._tx
        if self._compact is None:
            cols, text = self._feature_columns()
            tx = load_clean_history(self.settings, self.day, since=self.feature_since(), columns=cols, dictionary=text)
            self._compact = compact_history(tx, description=self.settings.use_text)
        return self._compact

    def feature_source(self) -> pd.DataFrame | Callable[[int], pd.DataFrame]:
        """What :func:`features.build_features` reads here: the history when one is loaded or
        there is one shard, else (feature_shards > 1) the :class:`ShardSpool`'s reader of one
        shard's rows, so that the features of a snapshot hold one shard's rows at a time."""
        if self._tx is not None or self._compact is not None or int(self.settings.feature_shards) <= 1:
            return self.feature_history()
        if self._spool is None:
            self._spool = ShardSpool(self)
        return self._spool.read

    @property
    def first_day(self) -> date:
        """The first invoice day with a clean row (read from the first non-empty daily partition
        when the history itself has not been loaded)."""
        if self._tx is not None:
            if self._tx.empty:
                raise ValueError(f"no clean transactions up to {self.day}")
            return self._tx["invoice_ts"].min().date()
        store = self.ws.per_source
        for d in store.list_days("clean", CLEAN_FILE):
            if d > self.day:
                break
            ts = store.read_parquet(store.path("clean", d, CLEAN_FILE), columns=["invoice_ts"])["invoice_ts"]
            if len(ts):
                return ts.min().date()
        raise ValueError(f"no clean transactions up to {self.day}")

    def history_since(self, since: date, through: date | None = None) -> pd.DataFrame:
        """Clean rows with invoice day in [``since``, ``through``] (default: the run's day), with
        what labels read (customer, time and value): from the loaded history when it holds those
        days, else read from those daily partitions only. Labels need the days after their as-of
        day alone, so a stage that labels snapshots reads their windows, not the whole history."""
        import pandas as pd

        through = min(through or self.day, self.day)
        loaded = self._held_from(since)
        if loaded is not None:
            ts = loaded["invoice_ts"]
            return loaded[((ts >= pd.Timestamp(since)) & (ts < pd.Timestamp(through) + pd.Timedelta(days=1))).to_numpy()]
        cols = ["customer_id", "invoice_ts", "line_value"]
        paths = clean_paths(self.settings, self.day, since, through)
        if not paths:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(cols, (object, "datetime64[ns]", "float64"))})
        return self.ws.per_source.read_parquet_many(paths, columns=cols)

    def _held_from(self, since: date | None) -> pd.DataFrame | None:
        """The history this run holds in memory when it has every line from ``since`` on (``None``:
        from the first day), else ``None`` (read the partitions)."""
        if self._tx is not None:
            return self._tx
        held_from = self.feature_since()  # the compact history starts at the lookback of snapshots_from
        if self._compact is None or (held_from is not None and (since is None or held_from > since)):
            return None
        return self._compact

    def release_histories(self) -> None:
        """Drop the histories read from the clean partitions (a later call reads them again): a
        stage frees them before work that needs none, e.g. the fits once the training tables
        are built."""
        self._compact = None  # (the shard spool holds no memory: it stays)
        give_back_memory()

    def shard_history(self, shard: int, *, hand_on: str | None = None) -> pd.DataFrame:
        """The compact history (:func:`compact.compact_history`) of the customers in ``shard`` of
        ``settings.feature_shards`` (:mod:`purchasing_power.shards`), read from the daily clean
        partitions through the run's day: the rows one sharded features task holds. ``hand_on``:
        also store those rows there (one file), for :meth:`handed_history` to read."""
        from purchasing_power.shards import read_shard

        cols, text = self._feature_columns()
        tx = read_shard(self.ws.per_source, clean_paths(self.settings, self.day, self.feature_since()), shard, self.settings.feature_shards,
                        columns=cols, dictionary=text)
        if hand_on is not None:
            self.ws.per_source.write_parquet(tx, hand_on)
        return compact_history(tx, description=self.settings.use_text)

    def handed_history(self, path: str) -> pd.DataFrame:
        """The compact history :meth:`shard_history` stored at ``path`` (one file: no scan of
        the clean partitions)."""
        cols, text = self._feature_columns()
        tx = self.ws.per_source.read_parquet_many([path], columns=cols, dictionary=text)
        return compact_history(tx, description=self.settings.use_text)

    def _feature_columns(self) -> tuple[list[str], list[str]]:
        """(the clean columns features read, those of them read as categoricals)."""
        description = ("description",) if self.settings.use_text else ()
        return [*FEATURE_COLUMNS, *description], [*CODED, *description]

    def feature_path(self, as_of: date) -> str:
        return self.ws.per_source.path("features", as_of, FEATURES_FILE.format(feature_key=self.feature_key))

    def feature_part_path(self, shard: int, part: str, dataset: str = "feature_shards") -> str:
        """Where sharded features tasks (``dataset`` "score_shards": score tasks) of the run's day
        hand on ``part`` of ``shard``."""
        name = FEATURE_PART_FILE.format(feature_key=self.feature_key, shard=shard, shards=self.settings.feature_shards, part=part)
        return self.ws.per_source.path(dataset, self.day, name)

    def score_part_path(self, shard: int, part: str) -> str:
        """Where sharded score tasks of the run's day hand on ``part`` of ``shard``."""
        return self.feature_part_path(shard, part, "score_shards")

    def store_features(self, as_of: date, f: pd.DataFrame) -> str:
        """Store (and keep) features computed elsewhere (the sharded features tasks)."""
        path = self.feature_path(as_of)
        self._write_features(f, path)
        self._features[as_of] = f
        return path

    def _write_features(self, f: pd.DataFrame, path: str) -> None:
        """Write ``f`` with ``customer_id`` as its first column, as ``f.reset_index()`` would,
        without a copy of the frame (the index becomes a column in place and back)."""
        f.reset_index(inplace=True)
        try:
            self.ws.per_source.write_parquet(f, path, row_group_size=FEATURE_ROW_GROUP)
        finally:
            f.set_index("customer_id", inplace=True)

    def stored_features_shard(self, as_of: date, shard: int, shards: int) -> pd.DataFrame:
        """Customer shard ``shard`` of ``shards``' rows of the stored features at ``as_of``, read a
        row group at a time (every customer's features are computed and stored first when
        missing: a day the features stage has not run for)."""
        from purchasing_power.shards import read_file_shard

        path = self.feature_path(as_of)
        if not self.ws.per_source.exists(path):
            self.features(as_of, keep=False)
        return read_file_shard(self.ws.per_source, path, shard, shards).set_index("customer_id")

    def sample_path(self, as_of: date, level: int) -> str:
        name = FEATURES_SAMPLE_FILE.format(feature_key=self.feature_key, seed=int(self.settings.seed), level=int(level))
        return self.ws.per_source.path("features", as_of, name)

    def customers_as_of(self, as_of: date) -> int:
        """How many customers the features at ``as_of`` have (a valid sale line before as_of + 1)."""
        import pandas as pd

        store, path = self.ws.per_source, self.feature_path(as_of)
        if as_of in self._features:
            return len(self._features[as_of])
        if store.exists(path):
            return len(store.read_parquet(path, columns=["customer_id"]))
        since = lookback_since(as_of, int(self.settings.feature_lookback_days))
        end = pd.Timestamp(as_of) + pd.Timedelta(days=1)
        loaded = self._held_from(since)
        if loaded is not None:
            sold = sale_lines(loaded) & (loaded["invoice_ts"] < end).to_numpy()
            if since is not None:  # the customers the features at as_of have: a sale line in their lookback
                sold &= (loaded["invoice_ts"] >= pd.Timestamp(since)).to_numpy()
            return int(loaded["customer_id"][sold].nunique())
        return sold_customers(self.ws.per_source, clean_paths(self.settings, self.day, since, as_of))

    def sampled_features(self, as_of: date, level: int) -> pd.DataFrame:
        """The features at ``as_of`` of the seeded sample of customers of share 2**-``level``
        (:func:`shards.customer_sample` with ``settings.seed``), each row equal to its row of the
        full :meth:`features`: taken from the stored full features or from a stored sample of a
        larger share when there is one, else computed for the sample only
        (``build_features(sample=...)``: a fraction of the work) and stored as that share's sample."""
        from purchasing_power.shards import customer_sample

        if level <= 0:
            return self.features(as_of)
        self._check_snapshot(as_of)
        share, seed, store = 0.5 ** int(level), int(self.settings.seed), self.ws.per_source

        def pick(f: pd.DataFrame) -> pd.DataFrame:
            return f[customer_sample(f.index.to_numpy(), share, seed)]

        if as_of in self._features:
            return pick(self._features[as_of])
        stored = [self.feature_path(as_of), *(self.sample_path(as_of, k) for k in range(1, int(level) + 1))]
        for k, path in enumerate(stored):
            if store.exists(path):
                f = store.read_parquet(path, index="customer_id")
                return f if k == level else pick(f)
        product = self.vectors if self.settings.use_text else None
        user = (self.texts, self.vectors) if self.user_text else None
        f = build_features(self.feature_source(), as_of, product, user_texts=user, shards=self.settings.feature_shards,
                           sample=lambda ids: customer_sample(ids, share, seed), lookback=int(self.settings.feature_lookback_days))
        self._write_features(f, stored[-1])
        return f

    def features(self, as_of: date, *, refresh: bool = False, keep: bool = True) -> pd.DataFrame:
        """Point-in-time features at ``as_of``, stored once computed (they depend only on data
        before as_of+1). ``refresh`` recomputes them (the run's own day, whose raw data a rerun
        may have re-extracted); ``keep=False`` does not hold them in memory for later calls."""
        if as_of in self._features and not refresh:
            return self._features[as_of]
        self._check_snapshot(as_of)
        store = self.ws.per_source
        path = self.feature_path(as_of)
        if not refresh and store.exists(path):
            f = store.read_parquet(path, index="customer_id")
        else:
            product = self.vectors if self.settings.use_text else None
            user = (self.texts, self.vectors) if self.user_text else None
            f = build_features(self.feature_source(), as_of, product, user_texts=user, shards=self.settings.feature_shards,
                               lookback=int(self.settings.feature_lookback_days))
            self._write_features(f, path)
        if keep:
            self._features[as_of] = f
        return f
