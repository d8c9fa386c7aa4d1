-- The first schema: users and their channel identities, conversations and their
-- messages, provider interactions, the durable inbox and outbox, channel cursors
-- and human handoffs. Instants are timestamptz (UTC on the wire).

CREATE TABLE users (
    user_id       bigserial PRIMARY KEY,
    display_name  text,
    unreachable   boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    forgotten_at  timestamptz
);

CREATE TABLE identities (
    identity_id  bigserial PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    channel      text NOT NULL,
    user_key     text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel, user_key)
);
CREATE INDEX identities_user_key ON identities (user_key);
CREATE INDEX identities_user_id ON identities (user_id);

CREATE TABLE conversations (
    conversation_id  bigserial PRIMARY KEY,
    user_id          bigint NOT NULL UNIQUE REFERENCES users (user_id) ON DELETE CASCADE,
    service_type     text NOT NULL DEFAULT 'RENSEIGNEMENT',
    handoff_open     boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE messages (
    message_id       bigserial PRIMARY KEY,
    conversation_id  bigint NOT NULL REFERENCES conversations (conversation_id) ON DELETE CASCADE,
    direction        text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    text             text NOT NULL,
    service_type     text NOT NULL,
    correlation_id   text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_conversation ON messages (conversation_id, message_id);
CREATE INDEX messages_created_at ON messages (created_at);

CREATE TABLE interactions (
    interaction_id   bigserial PRIMARY KEY,
    correlation_id   text NOT NULL,
    conversation_id  bigint REFERENCES conversations (conversation_id) ON DELETE SET NULL,
    provider         text NOT NULL,
    model            text NOT NULL,
    key_alias        text NOT NULL,
    latency_s        double precision NOT NULL,
    tokens_in        integer NOT NULL,
    tokens_out       integer NOT NULL,
    outcome          text NOT NULL,
    service_type     text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX interactions_created_at ON interactions (created_at);
CREATE INDEX interactions_correlation ON interactions (correlation_id);

CREATE TABLE inbox (
    inbox_id        bigserial PRIMARY KEY,
    correlation_id  text NOT NULL,
    channel         text NOT NULL,
    user_key        text NOT NULL,
    chat_id         text NOT NULL,
    external_id     text NOT NULL,
    text            text NOT NULL,
    kind            text NOT NULL,
    received_at     timestamptz NOT NULL,
    display_name    text,
    language_hint   text,
    accepted_at     timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    service_type    text,
    UNIQUE (channel, external_id)
);
CREATE INDEX inbox_pending ON inbox (inbox_id) WHERE processed_at IS NULL;
CREATE INDEX inbox_user_key ON inbox (user_key, inbox_id);
CREATE INDEX inbox_received_at ON inbox (received_at);

CREATE TABLE outbox (
    outbox_id        bigserial PRIMARY KEY,
    correlation_id   text NOT NULL,
    channel          text NOT NULL,
    user_key         text NOT NULL,
    chat_id          text NOT NULL,
    text             text NOT NULL,
    inbox_id         bigint REFERENCES inbox (inbox_id) ON DELETE SET NULL,
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    last_error       text,
    given_up         boolean NOT NULL DEFAULT false
);
CREATE INDEX outbox_pending ON outbox (channel, outbox_id) WHERE sent_at IS NULL AND NOT given_up;
CREATE INDEX outbox_user_key ON outbox (user_key, outbox_id);
CREATE INDEX outbox_created_at ON outbox (created_at);

CREATE TABLE channel_cursors (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE handoffs (
    handoff_id       bigserial PRIMARY KEY,
    conversation_id  bigint NOT NULL REFERENCES conversations (conversation_id) ON DELETE CASCADE,
    user_key         text NOT NULL,
    state            text NOT NULL CHECK (state IN ('open', 'assigned', 'closed')),
    reason           text NOT NULL,
    correlation_id   text NOT NULL,
    opened_at        timestamptz NOT NULL DEFAULT now(),
    assigned_to      text,
    assigned_at      timestamptz,
    closed_at        timestamptz,
    closed_by        text
);
-- At most one open or assigned handoff per conversation.
CREATE UNIQUE INDEX handoffs_one_active ON handoffs (conversation_id) WHERE state <> 'closed';
CREATE INDEX handoffs_active_opened ON handoffs (opened_at) WHERE state <> 'closed';
