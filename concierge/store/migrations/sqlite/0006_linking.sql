-- One person across channels: one-time link codes (only their keyed hash is kept) and
-- the wrong codes each identity sent, which refuse further tries for an hour.

CREATE TABLE link_codes (
    code_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    digest      TEXT NOT NULL,
    channel     TEXT NOT NULL,
    user_key    TEXT NOT NULL UNIQUE,
    chat_id     TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX link_codes_expires_at ON link_codes (expires_at);

CREATE TABLE link_failures (
    failure_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    user_key    TEXT NOT NULL,
    failed_at   TEXT NOT NULL
);
CREATE INDEX link_failures_user_key ON link_failures (user_key, failed_at);
