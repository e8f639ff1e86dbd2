"""Arrow tables to pandas frames in as little memory as the data takes, and Arrow's freed memory
given back (its allocator keeps it otherwise: a stage's reads would stack up in its peak RSS)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def to_frame(table: Any, index: str | None = None) -> pd.DataFrame:
    """``table`` as a frame, its Arrow memory given back once converted; ``index``: that column as
    the index, set in place (``set_index`` copies every column: a million customers' features,
    2.1 GB, would be held three times at the peak instead of twice)."""
    frame = table.to_pandas()
    del table
    if index is not None:
        frame.set_index(index, inplace=True)
    release_arrow_memory()
    return frame


def release_arrow_memory() -> None:
    """Give Arrow's freed memory back to the system: its allocator keeps it otherwise, and the
    next step's arrays come on top of it in the peak RSS."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
