"""The lake: a Delta Lake table, Hive-partitioned by event_date (docs/lake.md).

Rows are buffered per source partition (LakeRows) and committed in one atomic Delta
commit per flush (LakeTable.commit), which also records, per source partition, the
last offset and the source clock as Delta application transactions. Readers must go
through the Delta log (see docs/lake.md): a bare read of the Parquet files in the
folder sees files that compaction has replaced until they are vacuumed.

Where the table is (a folder or an object-store URI, with its storage options):
location.py, which the settings import without loading deltalake or pyarrow.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "LakeRows": "rows",
    "PartitionRows": "rows",
    "LakeFenced": "table",
    "LakePosition": "table",
    "LakeTable": "table",
    "LakeLocation": "location",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    """The table's classes load deltalake and pyarrow on first use, not at import."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
