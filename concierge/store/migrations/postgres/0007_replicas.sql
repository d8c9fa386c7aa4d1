-- Several replicas on one database: conversation leases with fencing epochs, outbox
-- claims, and a notice to every replica when an inbox row arrives.

-- One row per conversation key, never deleted: the epoch only grows, so a holder
-- that lost its lease can never match it again.
CREATE TABLE conversation_leases (
    lease_key   text PRIMARY KEY,
    user_key    text NOT NULL,  -- whom to wake when it is let go with rows pending
    holder      text NOT NULL,
    epoch       bigint NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- The lease a turn was run under, stamped on its inbox row as the turn commits.
ALTER TABLE inbox ADD COLUMN lease_key text;
ALTER TABLE inbox ADD COLUMN lease_epoch bigint;

-- The fence: a turn's commit under a lease whose epoch moved on is refused by the
-- database itself. The share lock holds a takeover back until the commit ends, so a
-- commit either precedes the takeover or is refused.
CREATE FUNCTION concierge_fence_turn() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    current_epoch bigint;
BEGIN
    SELECT epoch INTO current_epoch FROM conversation_leases
    WHERE lease_key = NEW.lease_key FOR SHARE;
    IF current_epoch IS DISTINCT FROM NEW.lease_epoch THEN
        RAISE EXCEPTION 'stale lease epoch % for %', NEW.lease_epoch, NEW.lease_key
            USING ERRCODE = 'CN001';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER inbox_fenced_turn
    BEFORE UPDATE OF processed_at ON inbox
    FOR EACH ROW
    WHEN (OLD.processed_at IS NULL AND NEW.processed_at IS NOT NULL
          AND NEW.lease_key IS NOT NULL)
    EXECUTE FUNCTION concierge_fence_turn();

-- Every replica hears of every new inbox row (the lease holder answers it).
CREATE FUNCTION concierge_inbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('concierge_inbox', NEW.user_key);
    RETURN NULL;
END;
$$;

CREATE TRIGGER inbox_notified
    AFTER INSERT ON inbox
    FOR EACH ROW EXECUTE FUNCTION concierge_inbox_notify();

CREATE INDEX conversation_leases_holder ON conversation_leases (holder);

-- Outbox rows claimed by one replica's sender until the claim expires.
ALTER TABLE outbox ADD COLUMN claimed_by text;
ALTER TABLE outbox ADD COLUMN claimed_until timestamptz;
