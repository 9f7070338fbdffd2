-- Pricing and stock rules (issue 5): exchange rates, what each offer was made from, per-channel
-- computation state for incremental recomputation, and price moves held for human approval.

-- Exchange rates: 1 unit of `currency` is `rate` units of `quote`, valid from `valid_on`.
-- Filled from pricing.yaml or a CSV (commerce_sync.pricing.rates); the newest valid_on <= today wins.
CREATE TABLE hub.exchange_rate (
    currency    char(3) NOT NULL,
    quote       char(3) NOT NULL,
    valid_on    date NOT NULL,
    rate        numeric(18, 8) NOT NULL CHECK (rate > 0),
    source      text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    transfer_id uuid NOT NULL,
    PRIMARY KEY (currency, quote, valid_on),
    CHECK (currency <> quote)
);

-- Which override level chose the rule (sku / brand / category / default), where the cost came
-- from (erp, or supplier when the chosen supplier's dearer offer supplies stock), the rate used
-- and whether the rule's maximum price cut the price. Nullable / defaulted: no table rewrite.
ALTER TABLE hub.channel_offer
    ADD COLUMN rule_level text,
    ADD COLUMN cost_source text,
    ADD COLUMN exchange_rate numeric(18, 8),
    ADD COLUMN max_price_applied boolean NOT NULL DEFAULT false;

-- Incremental recomputation: a channel recomputes only SKUs whose inputs changed after
-- inputs_seen_until (the start of the oldest transaction that was open when it last computed);
-- a different config_sha256 (rules, overrides, channel settings) forces a full recomputation.
CREATE TABLE hub.pricing_state (
    channel           text PRIMARY KEY,
    config_sha256     text NOT NULL,
    inputs_seen_until timestamptz NOT NULL,
    computed_at       timestamptz NOT NULL DEFAULT now(),
    transfer_id       uuid NOT NULL
);
CREATE INDEX IF NOT EXISTS product_updated_idx ON hub.product (updated_at);
CREATE INDEX IF NOT EXISTS stock_updated_idx ON hub.stock (updated_at);

-- Every writer of pricing inputs gets updated_at maintained, even an ad-hoc UPDATE that forgets it:
-- incremental pricing depends on it.
CREATE FUNCTION hub.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
CREATE TRIGGER product_touch_updated_at BEFORE UPDATE ON hub.product
    FOR EACH ROW EXECUTE FUNCTION hub.touch_updated_at();
CREATE TRIGGER stock_touch_updated_at BEFORE UPDATE ON hub.stock
    FOR EACH ROW EXECUTE FUNCTION hub.touch_updated_at();
CREATE TRIGGER sku_supply_touch_updated_at BEFORE UPDATE ON hub.sku_supply
    FOR EACH ROW EXECUTE FUNCTION hub.touch_updated_at();

-- Deleted stock / supply rows leave no updated_at behind: a trigger notes the SKU here.
CREATE TABLE hub.pricing_input_deletion (
    sku        text NOT NULL,
    source     text NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pricing_input_deletion_at_idx ON hub.pricing_input_deletion (deleted_at);

CREATE FUNCTION hub.note_pricing_input_deletion() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hub.pricing_input_deletion (sku, source)
    SELECT DISTINCT o.sku, TG_TABLE_NAME FROM old_rows AS o;
    RETURN NULL;
END
$$;
CREATE TRIGGER stock_note_deletion AFTER DELETE ON hub.stock
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION hub.note_pricing_input_deletion();
CREATE TRIGGER sku_supply_note_deletion AFTER DELETE ON hub.sku_supply
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION hub.note_pricing_input_deletion();

-- Price moves held by a channel's change cap until a person approves or rejects them.
CREATE TABLE hub.price_proposal (
    proposal_id          uuid PRIMARY KEY,
    channel              text NOT NULL,
    status               text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'approved', 'rejected', 'superseded')),
    items                integer NOT NULL CHECK (items >= 0),
    created_at           timestamptz NOT NULL DEFAULT now(),
    created_transfer_id  uuid NOT NULL,
    decided_by           text,
    decided_at           timestamptz,
    decision_transfer_id uuid
);
CREATE INDEX price_proposal_pending_idx ON hub.price_proposal (channel) WHERE status = 'pending';

-- One held price move. price_hash fingerprints the proposed price (and everything it was made
-- from): the same hash is never proposed again while pending or after a rejection.
CREATE TABLE hub.price_proposal_item (
    proposal_id       uuid NOT NULL REFERENCES hub.price_proposal (proposal_id),
    channel           text NOT NULL,
    sku               text NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'applied', 'rejected', 'superseded', 'stale')),
    old_price         numeric(14, 2) NOT NULL,
    price             numeric(14, 2) NOT NULL,
    move_pct          numeric(12, 2) NOT NULL,
    currency          char(3) NOT NULL,
    cost              numeric(14, 4) NOT NULL,
    floor_price       numeric(14, 2) NOT NULL,
    floor_applied     boolean NOT NULL,
    max_price_applied boolean NOT NULL,
    rule_id           text NOT NULL,
    rule_version      text NOT NULL,
    rule_level        text NOT NULL,
    cost_source       text NOT NULL,
    exchange_rate     numeric(18, 8) NOT NULL,
    price_hash        text NOT NULL,
    PRIMARY KEY (proposal_id, sku),
    CHECK (price >= floor_price AND price > 0)
);
CREATE UNIQUE INDEX price_proposal_item_pending_idx ON hub.price_proposal_item (channel, sku)
    WHERE status = 'pending';
CREATE INDEX price_proposal_item_hash_idx ON hub.price_proposal_item (channel, sku, price_hash);
