-- Bound for the next incremental run, taken before anything is read: rows committed after our
-- statements' snapshots belong to transactions that started at or after it (the start of the oldest
-- transaction open in the hub, or now).
SELECT least(now(), (SELECT min(xact_start) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL))
