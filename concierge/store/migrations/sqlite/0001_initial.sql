-- The first schema, the same tables as PostgreSQL's. Instants are ISO 8601 text in
-- UTC with a fixed width ('2026-11-27T13:15:38.000000Z') so that they sort as text.

CREATE TABLE users (
    user_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    display_name  TEXT,
    unreachable   INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    forgotten_at  TEXT
);

CREATE TABLE identities (
    identity_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    channel      TEXT NOT NULL,
    user_key     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    UNIQUE (channel, user_key)
);
CREATE INDEX identities_user_key ON identities (user_key);
CREATE INDEX identities_user_id ON identities (user_id);

CREATE TABLE conversations (
    conversation_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id          INTEGER NOT NULL UNIQUE REFERENCES users (user_id) ON DELETE CASCADE,
    service_type     TEXT NOT NULL DEFAULT 'RENSEIGNEMENT',
    handoff_open     INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

CREATE TABLE messages (
    message_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id  INTEGER NOT NULL REFERENCES conversations (conversation_id) ON DELETE CASCADE,
    direction        TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    text             TEXT NOT NULL,
    service_type     TEXT NOT NULL,
    correlation_id   TEXT NOT NULL,
    created_at       TEXT NOT NULL
);
CREATE INDEX messages_conversation ON messages (conversation_id, message_id);
CREATE INDEX messages_created_at ON messages (created_at);

CREATE TABLE interactions (
    interaction_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    correlation_id   TEXT NOT NULL,
    conversation_id  INTEGER REFERENCES conversations (conversation_id) ON DELETE SET NULL,
    provider         TEXT NOT NULL,
    model            TEXT NOT NULL,
    key_alias        TEXT NOT NULL,
    latency_s        REAL NOT NULL,
    tokens_in        INTEGER NOT NULL,
    tokens_out       INTEGER NOT NULL,
    outcome          TEXT NOT NULL,
    service_type     TEXT NOT NULL,
    created_at       TEXT NOT NULL
);
CREATE INDEX interactions_created_at ON interactions (created_at);
CREATE INDEX interactions_correlation ON interactions (correlation_id);

CREATE TABLE inbox (
    inbox_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    correlation_id  TEXT NOT NULL,
    channel         TEXT NOT NULL,
    user_key        TEXT NOT NULL,
    chat_id         TEXT NOT NULL,
    external_id     TEXT NOT NULL,
    text            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    received_at     TEXT NOT NULL,
    display_name    TEXT,
    language_hint   TEXT,
    accepted_at     TEXT NOT NULL,
    processed_at    TEXT,
    service_type    TEXT,
    UNIQUE (channel, external_id)
);
CREATE INDEX inbox_pending ON inbox (inbox_id) WHERE processed_at IS NULL;
CREATE INDEX inbox_user_key ON inbox (user_key, inbox_id);
CREATE INDEX inbox_received_at ON inbox (received_at);

CREATE TABLE outbox (
    outbox_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    correlation_id   TEXT NOT NULL,
    channel          TEXT NOT NULL,
    user_key         TEXT NOT NULL,
    chat_id          TEXT NOT NULL,
    text             TEXT NOT NULL,
    inbox_id         INTEGER REFERENCES inbox (inbox_id) ON DELETE SET NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    next_attempt_at  TEXT NOT NULL,
    sent_at          TEXT,
    last_error       TEXT,
    given_up         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_pending ON outbox (channel, outbox_id) WHERE sent_at IS NULL AND given_up = 0;
CREATE INDEX outbox_user_key ON outbox (user_key, outbox_id);
CREATE INDEX outbox_created_at ON outbox (created_at);

CREATE TABLE channel_cursors (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE handoffs (
    handoff_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id  INTEGER NOT NULL REFERENCES conversations (conversation_id) ON DELETE CASCADE,
    user_key         TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('open', 'assigned', 'closed')),
    reason           TEXT NOT NULL,
    correlation_id   TEXT NOT NULL,
    opened_at        TEXT NOT NULL,
    assigned_to      TEXT,
    assigned_at      TEXT,
    closed_at        TEXT,
    closed_by        TEXT
);
-- At most one open or assigned handoff per conversation.
CREATE UNIQUE INDEX handoffs_one_active ON handoffs (conversation_id) WHERE state <> 'closed';
CREATE INDEX handoffs_active_opened ON handoffs (opened_at) WHERE state <> 'closed';
