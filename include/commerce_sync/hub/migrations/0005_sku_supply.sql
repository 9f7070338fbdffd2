-- Multi-supplier merge result: per hub SKU, the supplier offer chosen by the merge policy
-- (cheapest with stock, or supplier priority) and the dropship stock available from suppliers.
-- Written by the supplier merge (sources), read by the pricing and stock rules.
CREATE TABLE hub.sku_supply (
    sku                text PRIMARY KEY REFERENCES hub.product (sku),
    supplier           text NOT NULL,          -- the chosen supplier offer ...
    supplier_sku       text NOT NULL,          -- ... (hub.supplier_offer key)
    purchase_price     numeric(14, 4) NOT NULL CHECK (purchase_price > 0),
    currency           char(3) NOT NULL,
    chosen_quantity    integer NOT NULL CHECK (chosen_quantity >= 0),   -- stock of the chosen offer
    total_quantity     integer NOT NULL CHECK (total_quantity >= 0),    -- over all active offers for the SKU
    offers_considered  integer NOT NULL CHECK (offers_considered >= 1),
    policy             text NOT NULL,          -- merge policy that chose it, e.g. 'cheapest_in_stock'
    supplier_offer_version bigint NOT NULL,    -- hub.supplier_offer.version of the chosen offer
    row_hash           text NOT NULL,
    version            bigint NOT NULL DEFAULT 1,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    transfer_id        uuid NOT NULL
);
CREATE INDEX sku_supply_updated_idx ON hub.sku_supply (updated_at);
CREATE INDEX sku_supply_supplier_idx ON hub.sku_supply (supplier, supplier_sku);
