-- A keyed ledger whose change rows are closed once the transfer is recorded.
--
-- 1. audit.transfer.mac: HMAC-SHA256 of the row's hash with the ledger key, which is kept outside
--    the database (commerce_sync.audit.ledger.row_mac). A row appended or rewritten by whoever can
--    write here but lacks the key (the application role, a superuser) carries no valid MAC. Rows
--    written before this migration keep mac NULL and stay valid as long as they precede the first
--    keyed row (ledger verify counts them and refuses an unkeyed row after a keyed one).
-- 2. audit.change refuses rows for a transfer whose ledger row is already written: a transfer's
--    change rows are inserted in its own transaction before its ledger row, which carries their
--    count and digest; anything added later is a forgery (ledger verify also recomputes digests).
ALTER TABLE audit.transfer ADD COLUMN mac text CHECK (mac ~ '^[0-9a-f]{64}$');

CREATE FUNCTION audit.refuse_late_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    late record;
BEGIN
    SELECT n.transfer_id, t.seq INTO late
      FROM new_rows AS n JOIN audit.transfer AS t ON t.transfer_id = n.transfer_id
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'audit.change: transfer % is already recorded (ledger seq %); its change rows are closed',
            late.transfer_id, late.seq
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Change rows are written in the transfer''s own transaction, before its ledger row.';
    END IF;
    RETURN NULL;
END
$$;
ALTER FUNCTION audit.refuse_late_change() SET search_path = pg_catalog, pg_temp;

-- One set-based check per INSERT statement (the writers insert thousands of rows at once). The
-- application role can insert through audit.change only, never into a partition directly.
CREATE TRIGGER change_refuse_late_insert
    AFTER INSERT ON audit.change
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_late_change();
ALTER TABLE audit.change ENABLE ALWAYS TRIGGER change_refuse_late_insert;
