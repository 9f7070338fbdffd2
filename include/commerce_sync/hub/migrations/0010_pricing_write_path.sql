-- Pricing's write path, measured at 1M offers (bench/pricing.py): an incremental run after a 1 %
-- input change is dominated by random index writes per changed offer, not by evaluation.

-- Offers are rewritten in place on every price or stock change and only the primary key is
-- indexed: free space per page lets those updates be HOT (no new index entry). Existing pages get
-- the space when the table is rewritten (VACUUM FULL / pg_repack); new pages get it at once.
ALTER TABLE hub.channel_offer SET (fillfactor = 85);

-- The channel's offer count, kept by the computation itself (counted on full runs, plus the offers
-- an incremental run inserts), so the breaker and change-cap shares need no scan of the channel.
ALTER TABLE hub.pricing_state ADD COLUMN offer_count bigint;

-- One b-tree for the outbox's per-SKU lookups and its uniqueness instead of two in random order.
-- The idempotency key is a sha256 over channel, SKU, field, version and payload (or names the
-- reconciliation transfer), so it stays unique with the offer change it belongs to.
CREATE UNIQUE INDEX outbox_change_key_idx ON hub.outbox (channel, sku, field, offer_version, idempotency_key);
ALTER TABLE hub.outbox DROP CONSTRAINT outbox_idempotency_key_key;
DROP INDEX hub.outbox_sku_idx;
