-- Erasure that holds: a keyed hash of each erased message's (channel, external id), so a
-- replayed delivery is refused, and a notice per erased identity, so live actors and
-- caches of every process forget it too. Neither holds any content or id in clear.

CREATE TABLE store_keys (
    name    text PRIMARY KEY,
    secret  text NOT NULL
);

CREATE TABLE tombstones (
    digest     text PRIMARY KEY,
    erased_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE erasures (
    erasure_id   bigserial PRIMARY KEY,
    user_digest  text NOT NULL,
    erased_at    timestamptz NOT NULL DEFAULT now()
);
