-- Audit integrity for the application role, row-level changes, and change digests on transfers.
--
-- 1. commerce_sync_app: the NOLOGIN role the pipelines' login is granted. Full DML on hub and
--    staging, but only INSERT and SELECT on audit: it can append to the ledger, never rewrite it,
--    and (not being the owner) cannot ALTER the audit tables to disable their triggers.
-- 2. audit.change: before/after values per SKU and field, written in the transaction of the data
--    change, partitioned by month, append-only like audit.transfer.
-- 3. audit.transfer.changes_count / changes_sha256: the digest of a transfer's change rows, part
--    of the ledger's hash when set (rows written before this migration keep verifying).

-- Roles are cluster-wide: another database on the server (or a concurrent migrator) may have
-- created it already.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'commerce_sync_app') THEN
        CREATE ROLE commerce_sync_app NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;

-- Row-level changes -----------------------------------------------------------------------------
CREATE TABLE audit.change (
    change_id    bigint GENERATED ALWAYS AS IDENTITY,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    transfer_id  uuid NOT NULL,
    dataset      text NOT NULL,
    sku          text NOT NULL,
    channel      text,
    supplier     text,
    field        text NOT NULL,
    old_value    text,
    new_value    text,
    rule_id      text,
    rule_version text,
    source_ref   jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (change_id, recorded_at)
) PARTITION BY RANGE (recorded_at);
CREATE INDEX change_transfer_idx ON audit.change (transfer_id);
CREATE INDEX change_sku_idx ON audit.change (sku, dataset, recorded_at);

-- Inserts never fail for want of a partition; ensure_change_partitions keeps monthly ones ahead.
CREATE TABLE audit.change_default PARTITION OF audit.change DEFAULT;

-- Row triggers on a partitioned table are cloned onto every partition (existing and future);
-- statement-level TRUNCATE triggers are not, so each partition gets its own (see below).
CREATE TRIGGER change_refuse_update_delete
    BEFORE UPDATE OR DELETE ON audit.change
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER change_refuse_truncate
    BEFORE TRUNCATE ON audit.change
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
ALTER TABLE audit.change ENABLE ALWAYS TRIGGER change_refuse_update_delete;
ALTER TABLE audit.change ENABLE ALWAYS TRIGGER change_refuse_truncate;

-- Makes one partition append-only in its own right (TRUNCATE on a partition bypasses the
-- parent's statement trigger; the cloned row trigger is set to fire in replica mode too).
CREATE FUNCTION audit.protect_change_partition(partition regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = partition AND tgname = 'change_refuse_truncate') THEN
        EXECUTE format('CREATE TRIGGER change_refuse_truncate BEFORE TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change()', partition);
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER change_refuse_truncate', partition);
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER change_refuse_update_delete', partition);
END
$$;

-- Creates the partitions of the current month and the next months_ahead months (idempotent) and
-- returns how many were created. A month whose rows already landed in the DEFAULT partition is
-- skipped with a NOTICE (its rows stay there, append-only and queryable through audit.change).
CREATE FUNCTION audit.ensure_change_partitions(months_ahead int DEFAULT 2) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    month_start date;
    month_end   date;
    part_name   text;
    created     int := 0;
BEGIN
    IF months_ahead < 0 THEN
        RAISE EXCEPTION 'months_ahead must be >= 0, got %', months_ahead;
    END IF;
    FOR i IN 0..months_ahead LOOP
        month_start := (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i))::date;
        month_end := (month_start + interval '1 month')::date;
        part_name := format('change_%s', to_char(month_start, 'YYYY_MM'));
        CONTINUE WHEN to_regclass(format('audit.%I', part_name)) IS NOT NULL;
        IF EXISTS (SELECT FROM audit.change_default
                   WHERE recorded_at >= (month_start::timestamp AT TIME ZONE 'UTC')
                     AND recorded_at < (month_end::timestamp AT TIME ZONE 'UTC')) THEN
            RAISE NOTICE 'audit.change: rows for % are in the default partition; partition % not created',
                to_char(month_start, 'YYYY-MM'), part_name;
            CONTINUE;
        END IF;
        EXECUTE format('CREATE TABLE audit.%I PARTITION OF audit.change FOR VALUES FROM (%L) TO (%L)',
                       part_name, month_start::timestamp AT TIME ZONE 'UTC',
                       month_end::timestamp AT TIME ZONE 'UTC');
        PERFORM audit.protect_change_partition(format('audit.%I', part_name)::regclass);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Runs as the owner, so the application role can keep partitions ahead without owning audit.change.
ALTER FUNCTION audit.ensure_change_partitions(int) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION audit.ensure_change_partitions(int), audit.protect_change_partition(regclass)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit.ensure_change_partitions(int) TO commerce_sync_app;

SELECT audit.protect_change_partition('audit.change_default'::regclass);
SELECT audit.ensure_change_partitions(2);

-- Change digests on the ledger ------------------------------------------------------------------
ALTER TABLE audit.transfer ADD COLUMN changes_count bigint, ADD COLUMN changes_sha256 text;

-- Privileges of the application role -------------------------------------------------------------
GRANT USAGE ON SCHEMA hub, staging, audit TO commerce_sync_app;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA hub, staging TO commerce_sync_app;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA hub, staging TO commerce_sync_app;
-- Tables that later migrations (run by this same owner) add to hub/staging get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA hub, staging
    GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO commerce_sync_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA hub, staging GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO commerce_sync_app;
-- The ledger: append and read only. Explicit REVOKEs so an earlier broad grant cannot linger.
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA audit FROM commerce_sync_app;
GRANT SELECT, INSERT ON audit.transfer, audit.change TO commerce_sync_app;
