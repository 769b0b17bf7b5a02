"""The PostgreSQL sink's statements; a window's are made from its WindowSpec
(tables/windows.py)."""

from tables.windows import WindowSpec

LOCK_KEY = 0x41435456  # "ACTV": the advisory lock that serialises every writer

# Those holding the lock and waiting on their client (idle in a transaction or in the
# middle of reading its next message) for longer than $2 seconds: a frozen worker.
STUCK_HOLDERS = """
SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1::bigint::oid
  AND l.objsubid = 1 AND a.pid <> pg_backend_pid() AND a.datname = current_database()
  AND (a.state LIKE 'idle in transaction%' OR a.wait_event = 'ClientRead')
  AND a.state_change < clock_timestamp() - make_interval(secs => $2)
"""

CLAIM = """
INSERT INTO partition_writers AS w (app_id, part, generation, written_at)
SELECT $4, p, g, now() FROM unnest($1::int[], $2::bigint[]) AS t(p, g)
ON CONFLICT (app_id, part) DO UPDATE SET generation = EXCLUDED.generation, written_at = now()
  WHERE w.generation <= EXCLUDED.generation
     OR w.written_at < now() - make_interval(secs => $3)
RETURNING part
"""

UPSERT_SESSIONS = """
INSERT INTO user_sessions (user_id, session_start_time, session_end_time,
                           session_duration_seconds, status, updated_at)
SELECT u, s, e, d, st, now()
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::double precision[], $5::text[])
  AS r(u, s, e, d, st)
ON CONFLICT (user_id, session_start_time) DO UPDATE
  SET session_end_time = EXCLUDED.session_end_time,
      session_duration_seconds = EXCLUDED.session_duration_seconds,
      status = EXCLUDED.status, updated_at = EXCLUDED.updated_at
"""

REJECT = """
INSERT INTO rejected_rows AS r (table_name, row_key, row_value, sqlstate, reason)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (table_name, row_key) DO UPDATE
  SET row_value = EXCLUDED.row_value, sqlstate = EXCLUDED.sqlstate, reason = EXCLUDED.reason,
      last_seen = now(), times = r.times + 1
"""


def _arrays(spec: WindowSpec, *more: str) -> str:
    """unnest's arguments: $1 the window starts, then a text array per key column."""
    types = ["timestamptz", *("text" for _ in spec.key_columns), *more]
    return ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))


def upsert_partials(spec: WindowSpec) -> str:
    """A partition's partial counts: the starts, the key columns, the partitions, the counts."""
    keys = ", ".join(("window_start", *spec.key_columns, "part"))
    count = spec.partial_column
    return f"""
INSERT INTO {spec.partials} ({keys}, {count})
SELECT * FROM unnest({_arrays(spec, "int", "bigint")})
ON CONFLICT ({keys}) DO UPDATE SET {count} = EXCLUDED.{count}
"""


def rollup(spec: WindowSpec) -> str:
    """The rows users read, recomputed as the sum of their partials: the starts and the
    key columns of the rows to recompute."""
    keys = ("window_start", *spec.key_columns)
    columns = ", ".join(("window_start", "window_end", *spec.key_columns))
    end = f"p.window_start + make_interval(secs => {spec.size_ms / 1000:g})"
    values = ", ".join(("p.window_start", end, *(f"p.{k}" for k in spec.key_columns)))
    on = " AND ".join(f"p.{k} = w.{k}" for k in keys)
    count = spec.count_column
    return f"""
INSERT INTO {spec.table} ({columns}, {count}, updated_at)
SELECT {values}, sum(p.{spec.partial_column}), now()
FROM {spec.partials} p
JOIN unnest({_arrays(spec)}) AS w({", ".join(keys)}) ON {on}
GROUP BY {", ".join(f"p.{k}" for k in keys)}
ON CONFLICT ({", ".join(keys)}) DO UPDATE
  SET {count} = EXCLUDED.{count}, updated_at = EXCLUDED.updated_at
"""
