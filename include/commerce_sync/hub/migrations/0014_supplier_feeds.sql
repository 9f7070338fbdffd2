-- Several feeds per supplier (issue 17): a price catalogue and a stock feed merge into one offer.
-- A stock feed may arrive before the catalogue (no price yet) and a catalogue without stock leaves the
-- quantity unknown: both fields become nullable. NULL price: not offered (the supply merge skips it);
-- NULL quantity: unknown, not sellable (the merge counts it as 0).
ALTER TABLE hub.supplier_offer
    ALTER COLUMN purchase_price DROP NOT NULL,
    ALTER COLUMN quantity DROP NOT NULL,
    -- Which feed last set each field, and in which transfer (audit.transfer): the ledger's per-field source.
    ADD COLUMN price_feed           text,
    ADD COLUMN price_transfer_id    uuid,
    ADD COLUMN quantity_feed        text,
    ADD COLUMN quantity_transfer_id uuid;

UPDATE hub.supplier_offer
   SET price_feed = 'main', price_transfer_id = transfer_id, quantity_feed = 'main', quantity_transfer_id = transfer_id;

-- Whether this delivery must carry the field (a stock-only feed does not deliver prices; a BMEcat
-- catalogue's stock is optional): a missing value is quarantined only where it is expected.
ALTER TABLE staging.supplier_offer
    ADD COLUMN price_expected    boolean NOT NULL DEFAULT true,
    ADD COLUMN quantity_expected boolean NOT NULL DEFAULT true;
