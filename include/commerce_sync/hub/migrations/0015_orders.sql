-- Marketplace orders (issue 18): orders and their lines as each marketplace last reported them, the
-- stock each line holds until the ERP has taken the order over, and one import cursor per channel.
--
-- Accounting, per SKU, once the ERP hand-off has run: units held by the hub for orders not handed to
-- the ERP + units handed to the ERP (not cancelled) = units sold - units cancelled. Sellable stock
-- subtracts the held units the ERP's own figures do not include yet (hub.reservation_outstanding).

-- Where each channel's order import stands: stored in the transaction that stores the orders it covers.
CREATE TABLE hub.order_cursor (
    channel     text PRIMARY KEY,
    cursor      text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    transfer_id uuid NOT NULL
);

-- The ERP's version (its cursor column, its own clock) of the row each stock figure was read from: a
-- reservation ends once the hub has read the version that includes the order (see below).
ALTER TABLE hub.stock ADD COLUMN source_updated_at timestamptz;

-- One row per marketplace order (the table is not called "order": a reserved word in SQL).
CREATE TABLE hub.sales_order (
    channel            text NOT NULL,
    order_id           text NOT NULL,
    status             text NOT NULL CHECK (status IN ('unpaid', 'ready', 'cancelled')),
    marketplace_status text NOT NULL,
    revision           text,
    marketplace_updated_at timestamptz,
    ordered_at         timestamptz,
    first_seen_at      timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    transfer_id        uuid NOT NULL,              -- the import that last changed the order
    -- The ERP hand-off: pending (not handed yet), handed (the ERP holds it; key channel:order_id),
    -- cancel_pending (cancelled on the marketplace after the hand-off; the ERP must hear it),
    -- cancelled (the ERP cancelled it), not_needed (cancelled before it was ever handed).
    erp_state          text NOT NULL DEFAULT 'pending'
                       CHECK (erp_state IN ('pending', 'handed', 'cancel_pending', 'cancelled', 'not_needed')),
    erp_key            text GENERATED ALWAYS AS (channel || ':' || order_id) STORED,
    erp_handed_at      timestamptz,
    erp_error          text,                       -- why the last hand-off attempt failed (cleared on success)
    erp_transfer_id    uuid,
    PRIMARY KEY (channel, order_id)
);
CREATE INDEX sales_order_erp_idx ON hub.sales_order (erp_state, channel) WHERE erp_state IN ('pending', 'cancel_pending');
CREATE INDEX sales_order_updated_idx ON hub.sales_order (updated_at);

CREATE TABLE hub.order_line (
    channel     text NOT NULL,
    order_id    text NOT NULL,
    line_id     text NOT NULL,
    sku         text,                              -- NULL: neither the line's SKU nor its offer id is known
    offer_id    text,
    quantity    integer NOT NULL CHECK (quantity > 0),
    unit_price  numeric(14, 2),
    currency    char(3),
    PRIMARY KEY (channel, order_id, line_id),
    FOREIGN KEY (channel, order_id) REFERENCES hub.sales_order (channel, order_id)
);
CREATE INDEX order_line_sku_idx ON hub.order_line (sku);

-- The stock one order line holds. held: counted against sellable stock until the ERP's figures include
-- the order; taken_over: they do (the ERP booked it and the hub has read the product row that shows it);
-- released: the order was cancelled. erp_booked_at is the ERP's version (its updated_at, its own clock)
-- of the SKU's product row that first includes this line, as the ERP acknowledged the hand-off.
-- oversold: units of this line that were not there when it was reserved (two channels sold the last
-- unit): shown to the operator, and alerted once, until resolved.
CREATE TABLE hub.stock_reservation (
    channel      text NOT NULL,
    order_id     text NOT NULL,
    line_id      text NOT NULL,
    sku          text NOT NULL,
    quantity     integer NOT NULL CHECK (quantity > 0),
    state        text NOT NULL CHECK (state IN ('held', 'taken_over', 'released')),
    erp_booked_at timestamptz,
    oversold     integer NOT NULL DEFAULT 0 CHECK (oversold >= 0 AND oversold <= quantity),
    available_at_reservation integer,              -- sellable units (before buffers) just before this line
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz,
    oversold_alerted_at  timestamptz,
    oversold_resolved_at timestamptz,
    transfer_id  uuid NOT NULL,                    -- the import that last changed it
    PRIMARY KEY (channel, order_id, line_id),
    FOREIGN KEY (channel, order_id, line_id) REFERENCES hub.order_line (channel, order_id, line_id)
);
CREATE INDEX stock_reservation_sku_idx ON hub.stock_reservation (sku) WHERE state = 'held';
CREATE INDEX stock_reservation_updated_idx ON hub.stock_reservation (updated_at);
CREATE INDEX stock_reservation_oversold_idx ON hub.stock_reservation (sku)
    WHERE oversold > 0 AND oversold_resolved_at IS NULL;

-- Units the hub holds that the ERP's figures (as last read into hub.stock) do not include: held lines
-- not booked by the ERP yet, or booked in a row version newer than the one the hub last read
-- (hub.stock.source_updated_at). Pricing subtracts these.
CREATE FUNCTION hub.erp_has_taken_over(p_sku text, p_booked_at timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_booked_at IS NOT NULL
       AND coalesce((SELECT max(st.source_updated_at) FROM hub.stock AS st WHERE st.sku = p_sku) >= p_booked_at, false)
$$;
CREATE VIEW hub.reservation_outstanding AS
SELECT r.sku, sum(r.quantity)::integer AS quantity
FROM hub.stock_reservation AS r
WHERE r.state = 'held' AND NOT hub.erp_has_taken_over(r.sku, r.erp_booked_at)
GROUP BY r.sku;

GRANT SELECT, INSERT, UPDATE, DELETE ON hub.order_cursor, hub.sales_order, hub.order_line, hub.stock_reservation
    TO commerce_sync_app;
GRANT SELECT ON hub.reservation_outstanding TO commerce_sync_app;
GRANT EXECUTE ON FUNCTION hub.erp_has_taken_over(text, timestamptz) TO commerce_sync_app;
