"""The PostgreSQL sink's statements. Window sizes come from tables/windows.py."""

from tables.windows import ACTIVE_USERS_WINDOW_MS, PAGE_VIEW_WINDOW_MS

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

UPSERT_PV_PARTIAL = """
INSERT INTO page_view_count_partials (window_start, page_url, part, view_count)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::int[], $4::bigint[])
ON CONFLICT (window_start, page_url, part) DO UPDATE SET view_count = EXCLUDED.view_count
"""
ROLLUP_PV = """
INSERT INTO page_view_counts (window_start, window_end, page_url, view_count, updated_at)
SELECT p.window_start, p.window_start + make_interval(secs => $3), p.page_url,
       sum(p.view_count), now()
FROM page_view_count_partials p
JOIN unnest($1::timestamptz[], $2::text[]) AS k(ws, url) ON p.window_start = k.ws
  AND p.page_url = k.url
GROUP BY p.window_start, p.page_url
ON CONFLICT (window_start, page_url) DO UPDATE
  SET view_count = EXCLUDED.view_count, updated_at = EXCLUDED.updated_at
"""
UPSERT_AU_PARTIAL = """
INSERT INTO active_user_partials (window_start, part, user_count)
SELECT * FROM unnest($1::timestamptz[], $2::int[], $3::bigint[])
ON CONFLICT (window_start, part) DO UPDATE SET user_count = EXCLUDED.user_count
"""
ROLLUP_AU = """
INSERT INTO active_users (window_start, window_end, active_user_count, updated_at)
SELECT p.window_start, p.window_start + make_interval(secs => $2), sum(p.user_count), now()
FROM active_user_partials p WHERE p.window_start = ANY($1::timestamptz[])
GROUP BY p.window_start
ON CONFLICT (window_start) DO UPDATE
  SET active_user_count = EXCLUDED.active_user_count, updated_at = EXCLUDED.updated_at
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

PV_WINDOW_S = PAGE_VIEW_WINDOW_MS // 1000
AU_WINDOW_S = ACTIVE_USERS_WINDOW_MS // 1000
