-- One person across channels: one-time link codes (only their keyed hash is kept) and
-- the wrong codes each identity sent, which refuse further tries for an hour.

CREATE TABLE link_codes (
    code_id     bigserial PRIMARY KEY,
    digest      text NOT NULL,
    channel     text NOT NULL,
    user_key    text NOT NULL UNIQUE,
    chat_id     text NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX link_codes_expires_at ON link_codes (expires_at);

CREATE TABLE link_failures (
    failure_id  bigserial PRIMARY KEY,
    user_key    text NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX link_failures_user_key ON link_failures (user_key, failed_at);
