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
