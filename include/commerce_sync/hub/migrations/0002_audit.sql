-- The transfer ledger: append-only and hash-chained. Each row's hash covers a canonical
-- serialisation of the row and the previous row's hash (see commerce_sync.audit.ledger).
CREATE SCHEMA IF NOT EXISTS audit;

CREATE TABLE audit.transfer (
    seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_id    uuid NOT NULL UNIQUE,
    run_id         text,
    dag_id         text,
    task_id        text,
    try_number     integer,
    map_index      integer,
    source         text NOT NULL,
    target         text NOT NULL,
    dataset        text NOT NULL,
    rows_read      bigint NOT NULL DEFAULT 0,
    rows_written   bigint NOT NULL DEFAULT 0,
    rows_rejected  bigint NOT NULL DEFAULT 0,
    rows_changed   bigint NOT NULL DEFAULT 0,
    payload_sha256 text,
    status         text NOT NULL CHECK (status IN ('success', 'failed')),
    message        text,
    details        jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    prev_hash      text NOT NULL,
    hash           text NOT NULL UNIQUE
);
CREATE INDEX transfer_run_idx ON audit.transfer (dag_id, run_id);
CREATE INDEX transfer_dataset_idx ON audit.transfer (dataset, finished_at);

CREATE FUNCTION audit.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'The ledger can only grow; record a correcting transfer instead.';
END
$$;

CREATE TRIGGER transfer_refuse_update_delete
    BEFORE UPDATE OR DELETE ON audit.transfer
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER transfer_refuse_truncate
    BEFORE TRUNCATE ON audit.transfer
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
-- ENABLE ALWAYS: the triggers fire even with session_replication_role = replica.
ALTER TABLE audit.transfer ENABLE ALWAYS TRIGGER transfer_refuse_update_delete;
ALTER TABLE audit.transfer ENABLE ALWAYS TRIGGER transfer_refuse_truncate;
