-- The staff desk: staff replies answer handed-off users, every operator action is
-- audited. A claim uses the handoffs' assigned_to/assigned_at columns (state 'assigned').

-- The platform id of the message an inbound message replies to (staff replying to a notice).
ALTER TABLE inbox ADD COLUMN reply_to text;

-- A message to the staff chat about a handoff (its notice, a user's message forwarded).
ALTER TABLE outbox ADD COLUMN handoff_id bigint REFERENCES handoffs (handoff_id) ON DELETE SET NULL;

-- Who on staff wrote an outbound message (NULL: the concierge itself).
ALTER TABLE messages ADD COLUMN author text;

-- What the staff chat shows about a handoff, by the platform's message id: a staff
-- member's reply to one of these messages answers that handoff.
CREATE TABLE staff_messages (
    channel     text NOT NULL,
    chat_id     text NOT NULL,
    message_id  text NOT NULL,
    handoff_id  bigint NOT NULL REFERENCES handoffs (handoff_id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, chat_id, message_id)
);

CREATE TABLE audit_log (
    audit_id        bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    actor           text NOT NULL,
    role            text NOT NULL,
    action          text NOT NULL,
    target          text NOT NULL,
    via             text NOT NULL,
    detail          text NOT NULL DEFAULT '',
    correlation_id  text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_target ON audit_log (target, audit_id);
-- Closed handoffs, newest first (the active ones have handoffs_active_opened).
CREATE INDEX handoffs_closed ON handoffs (handoff_id) WHERE state = 'closed';
