-- Supplier price-change report: per supplier load, the offers whose purchase price moved beyond the
-- configured threshold (or changed currency). Written in the load's transaction, before the merge,
-- so old_price is exactly what the hub held. Read by operators, the CSV report and the alert.
CREATE TABLE hub.supplier_price_change (
    transfer_id    uuid NOT NULL,
    supplier       text NOT NULL,
    supplier_sku   text NOT NULL,
    gtin           text,
    old_price      numeric(14, 4) NOT NULL,
    old_currency   char(3) NOT NULL,
    new_price      numeric(14, 4) NOT NULL,
    new_currency   char(3) NOT NULL,
    change_pct     numeric(12, 2),          -- NULL when the currency changed (not comparable)
    alert          boolean NOT NULL,        -- beyond the alert threshold
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transfer_id, supplier_sku)
);
CREATE INDEX supplier_price_change_supplier_idx ON hub.supplier_price_change (supplier, created_at);
