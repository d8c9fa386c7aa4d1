-- Erasure that holds: a keyed hash of each erased message's (channel, external id), so a
-- replayed delivery is refused, and a notice per erased identity, so live actors and
-- caches of every process forget it too. Neither holds any content or id in clear.

CREATE TABLE store_keys (
    name    TEXT PRIMARY KEY,
    secret  TEXT NOT NULL
);

CREATE TABLE tombstones (
    digest     TEXT PRIMARY KEY,
    erased_at  TEXT NOT NULL
);

CREATE TABLE erasures (
    erasure_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    user_digest  TEXT NOT NULL,
    erased_at    TEXT NOT NULL
);
