-- Tokens spent per UTC day, per person and per provider: what the daily budgets count.
-- Kept by a trigger on interactions, so every write path (a turn's batch, a single
-- interaction) counts, in the same transaction as the interaction it counts. A person
-- is their user id: the count follows them across channels once identities merge.

CREATE TABLE user_usage (
    day         TEXT NOT NULL,  -- YYYY-MM-DD, UTC
    user_id     INTEGER NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    tokens_in   INTEGER NOT NULL,
    tokens_out  INTEGER NOT NULL,
    calls       INTEGER NOT NULL,
    PRIMARY KEY (day, user_id)
);

CREATE TABLE provider_usage (
    day         TEXT NOT NULL,  -- YYYY-MM-DD, UTC
    provider    TEXT NOT NULL,
    tokens_in   INTEGER NOT NULL,
    tokens_out  INTEGER NOT NULL,
    calls       INTEGER NOT NULL,
    PRIMARY KEY (day, provider)
);

CREATE TRIGGER interactions_count_usage AFTER INSERT ON interactions
WHEN NEW.tokens_in + NEW.tokens_out > 0
BEGIN
    INSERT INTO provider_usage (day, provider, tokens_in, tokens_out, calls)
    VALUES (substr(NEW.created_at, 1, 10), NEW.provider, NEW.tokens_in, NEW.tokens_out, 1)
    ON CONFLICT (day, provider) DO UPDATE SET
        tokens_in = tokens_in + excluded.tokens_in,
        tokens_out = tokens_out + excluded.tokens_out,
        calls = calls + 1;
    INSERT INTO user_usage (day, user_id, tokens_in, tokens_out, calls)
    SELECT substr(NEW.created_at, 1, 10), user_id, NEW.tokens_in, NEW.tokens_out, 1
    FROM conversations WHERE conversation_id = NEW.conversation_id
    ON CONFLICT (day, user_id) DO UPDATE SET
        tokens_in = tokens_in + excluded.tokens_in,
        tokens_out = tokens_out + excluded.tokens_out,
        calls = calls + 1;
END;
