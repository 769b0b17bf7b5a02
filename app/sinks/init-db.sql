-- The pipeline's tables (docs/contract.md, "Windows and tables"). The worker runs this on start; it is idempotent.
-- Window counts are kept per user-keyed partition in *_partials and summed into the
-- tables users query, in the same transaction.

CREATE TABLE IF NOT EXISTS page_view_counts (
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    page_url     text        NOT NULL,
    view_count   bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, page_url)
);

CREATE TABLE IF NOT EXISTS active_users (
    window_start      timestamptz NOT NULL PRIMARY KEY,
    window_end        timestamptz NOT NULL,
    active_user_count bigint      NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS user_sessions (
    user_id                  text             NOT NULL,
    session_start_time       timestamptz      NOT NULL,
    session_end_time         timestamptz,
    session_duration_seconds double precision,
    status                   text             NOT NULL
        CHECK (status IN ('active', 'ended', 'timed_out')),
    updated_at               timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, session_start_time)
);

CREATE TABLE IF NOT EXISTS page_view_count_partials (
    window_start timestamptz NOT NULL,
    page_url     text        NOT NULL,
    part         integer     NOT NULL,
    view_count   bigint      NOT NULL,
    PRIMARY KEY (window_start, page_url, part)
);

CREATE TABLE IF NOT EXISTS active_user_partials (
    window_start timestamptz NOT NULL,
    part         integer     NOT NULL,
    user_count   bigint      NOT NULL,
    PRIMARY KEY (window_start, part)
);

CREATE INDEX IF NOT EXISTS user_sessions_status ON user_sessions (status);

-- The writer of each user-keyed partition's rows, per pipeline (APP_ID): the
-- consumer-group generation under which it was assigned the partition. A worker that
-- lost the partition (frozen, then woken) writes under an older generation and its
-- writes are refused. The owner renews its claims while it runs.
CREATE TABLE IF NOT EXISTS partition_writers (
    app_id     text        NOT NULL,
    part       int         NOT NULL,
    generation bigint      NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, part)
);

-- Rows that can never be written (PostgreSQL refused them as data: SQLSTATE classes 22
-- and 23, an index row too large), set aside so that the rest of their batch goes
-- through. The key and value are JSON text (U+0000 escaped), cut to about 500
-- characters with a digest of the whole. `times`: how often the row was refused
-- (a restart or another worker meets it again).
CREATE TABLE IF NOT EXISTS rejected_rows (
    table_name text        NOT NULL,
    row_key    text        NOT NULL,
    row_value  text,
    sqlstate   text,
    reason     text        NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    times      bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (table_name, row_key)
);
