-- The staff desk: staff replies answer handed-off users, every operator action is
-- audited. A claim uses the handoffs' assigned_to/assigned_at columns (state 'assigned').

-- The platform id of the message an inbound message replies to (staff replying to a notice).
ALTER TABLE inbox ADD COLUMN reply_to TEXT;

-- A message to the staff chat about a handoff (its notice, a user's message forwarded).
ALTER TABLE outbox ADD COLUMN handoff_id INTEGER REFERENCES handoffs (handoff_id) ON DELETE SET NULL;

-- Who on staff wrote an outbound message (NULL: the concierge itself).
ALTER TABLE messages ADD COLUMN author TEXT;

-- What the staff chat shows about a handoff, by the platform's message id: a staff
-- member's reply to one of these messages answers that handoff.
CREATE TABLE staff_messages (
    channel     TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    handoff_id  INTEGER NOT NULL REFERENCES handoffs (handoff_id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (channel, chat_id, message_id)
);

CREATE TABLE audit_log (
    audit_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT NOT NULL,
    actor           TEXT NOT NULL,
    role            TEXT NOT NULL,
    action          TEXT NOT NULL,
    target          TEXT NOT NULL,
    via             TEXT NOT NULL,
    detail          TEXT NOT NULL DEFAULT '',
    correlation_id  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_target ON audit_log (target, audit_id);
-- Closed handoffs, newest first (the active ones have handoffs_active_opened).
CREATE INDEX handoffs_closed ON handoffs (handoff_id) WHERE state = 'closed';
