-- Tokens spent per UTC day, per person and per provider: what the daily budgets count.
-- Kept by a statement trigger on interactions, so every write path (a turn's batch, a
-- single interaction) counts, in the same transaction as the interactions it counts.
-- Each statement adds its rows up first and upserts in key order: concurrent batches
-- lock the shared provider rows in the same order and cannot deadlock on them. A person
-- is their user id: the count follows them across channels once identities merge.

CREATE TABLE user_usage (
    day         date NOT NULL,  -- UTC
    user_id     bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    tokens_in   bigint NOT NULL,
    tokens_out  bigint NOT NULL,
    calls       bigint NOT NULL,
    PRIMARY KEY (day, user_id)
);

CREATE TABLE provider_usage (
    day         date NOT NULL,  -- UTC
    provider    text NOT NULL,
    tokens_in   bigint NOT NULL,
    tokens_out  bigint NOT NULL,
    calls       bigint NOT NULL,
    PRIMARY KEY (day, provider)
);

CREATE FUNCTION interactions_count_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO provider_usage AS u (day, provider, tokens_in, tokens_out, calls)
    SELECT (created_at AT TIME ZONE 'UTC')::date, provider, sum(tokens_in), sum(tokens_out),
           count(*)
    FROM added WHERE tokens_in + tokens_out > 0
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, provider) DO UPDATE SET
        tokens_in = u.tokens_in + EXCLUDED.tokens_in,
        tokens_out = u.tokens_out + EXCLUDED.tokens_out,
        calls = u.calls + EXCLUDED.calls;
    INSERT INTO user_usage AS u (day, user_id, tokens_in, tokens_out, calls)
    SELECT (a.created_at AT TIME ZONE 'UTC')::date, c.user_id, sum(a.tokens_in),
           sum(a.tokens_out), count(*)
    FROM added AS a JOIN conversations AS c USING (conversation_id)
    WHERE a.tokens_in + a.tokens_out > 0
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, user_id) DO UPDATE SET
        tokens_in = u.tokens_in + EXCLUDED.tokens_in,
        tokens_out = u.tokens_out + EXCLUDED.tokens_out,
        calls = u.calls + EXCLUDED.calls;
    RETURN NULL;
END
$$;

CREATE TRIGGER interactions_count_usage
AFTER INSERT ON interactions REFERENCING NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION interactions_count_usage();
