"""The lake: a Delta Lake table, Hive-partitioned by event_date (docs/lake.md).

Rows are buffered per source partition (LakeRows) and committed in one atomic Delta
commit per flush (LakeTable.commit), which also records, per source partition, the
last offset and the source clock as Delta application transactions. Readers must go
through the Delta log (see docs/lake.md): a bare read of the Parquet files in the
folder sees files that compaction has replaced until they are vacuumed.
"""

from app.sinks.lake.rows import LakeRows, PartitionRows
from app.sinks.lake.table import LakeFenced, LakePosition, LakeTable

__all__ = ["LakeFenced", "LakePosition", "LakeRows", "LakeTable", "PartitionRows"]
