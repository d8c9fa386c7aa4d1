-- Several replicas need PostgreSQL; SQLite is one process (a lock file enforces it),
-- so it has no leases or claims. Kept so that both backends share their numbering.
SELECT 1;
