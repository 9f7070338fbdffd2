-- Retention support: staging rows carry when they were staged, so rows left behind by a crashed
-- task can be removed after a configurable age; quarantine lookups by transfer get an index.
ALTER TABLE staging.erp_product ADD COLUMN staged_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE staging.supplier_offer ADD COLUMN staged_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX quarantine_transfer_idx ON hub.quarantine (transfer_id);
CREATE INDEX quarantine_resolved_idx ON hub.quarantine (resolved_at) WHERE status = 'resolved';
