-- Canonical state of the hub. Every row that a transfer changed carries that transfer's id
-- (audit.transfer.transfer_id) so any value can be traced back to the transfer that wrote it.
CREATE SCHEMA IF NOT EXISTS hub;
CREATE SCHEMA IF NOT EXISTS staging;

-- Products as the ERP masters them. gtin is normalised: digits only, left-padded to 14.
CREATE TABLE hub.product (
    sku               text PRIMARY KEY,
    gtin              text CHECK (gtin ~ '^[0-9]{14}$'),
    name              text NOT NULL,
    brand             text,
    category          text,
    description       text,
    purchase_price    numeric(14, 4) NOT NULL CHECK (purchase_price >= 0),
    currency          char(3) NOT NULL,
    vat_rate          numeric(6, 4) NOT NULL CHECK (vat_rate >= 0 AND vat_rate < 1),
    active            boolean NOT NULL DEFAULT true,
    row_hash          text NOT NULL,
    version           bigint NOT NULL DEFAULT 1,
    source_updated_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    transfer_id       uuid NOT NULL
);
CREATE INDEX product_gtin_idx ON hub.product (gtin);

-- Own stock per location, as the ERP reports it.
CREATE TABLE hub.stock (
    sku         text NOT NULL REFERENCES hub.product (sku),
    location    text NOT NULL,
    quantity    integer NOT NULL,
    reserved    integer NOT NULL DEFAULT 0,
    row_hash    text NOT NULL,
    version     bigint NOT NULL DEFAULT 1,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    transfer_id uuid NOT NULL,
    PRIMARY KEY (sku, location)
);

-- What each wholesaler offers us: purchase price and the stock it can ship (dropship).
CREATE TABLE hub.supplier_offer (
    supplier           text NOT NULL,
    supplier_sku       text NOT NULL,
    gtin               text CHECK (gtin ~ '^[0-9]{14}$'),
    name               text,
    purchase_price     numeric(14, 4) NOT NULL CHECK (purchase_price > 0),
    currency           char(3) NOT NULL,
    quantity           integer NOT NULL CHECK (quantity >= 0),
    active             boolean NOT NULL DEFAULT true,
    row_hash           text NOT NULL,
    version            bigint NOT NULL DEFAULT 1,
    source_file_sha256 text,
    source_record_no   integer,
    source_line        integer,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    transfer_id        uuid NOT NULL,
    PRIMARY KEY (supplier, supplier_sku)
);
CREATE INDEX supplier_offer_gtin_idx ON hub.supplier_offer (gtin);

-- What each channel should show for each SKU, as computed by the pricing rules.
-- published_version is the version last confirmed on the channel (or written to its feed).
CREATE TABLE hub.channel_offer (
    channel           text NOT NULL,
    sku               text NOT NULL REFERENCES hub.product (sku),
    price             numeric(14, 2) NOT NULL CHECK (price > 0),
    currency          char(3) NOT NULL,
    quantity          integer NOT NULL CHECK (quantity >= 0),
    availability      text NOT NULL CHECK (availability IN ('in_stock', 'out_of_stock')),
    cost              numeric(14, 4) NOT NULL,
    floor_price       numeric(14, 2) NOT NULL,
    floor_applied     boolean NOT NULL,
    rule_id           text NOT NULL,
    rule_version      text NOT NULL,
    row_hash          text NOT NULL,
    version           bigint NOT NULL DEFAULT 1,
    published_version bigint NOT NULL DEFAULT 0,
    computed_at       timestamptz NOT NULL DEFAULT now(),
    published_at      timestamptz,
    transfer_id       uuid NOT NULL,
    PRIMARY KEY (channel, sku),
    CHECK (price >= floor_price)
);

-- The channel's own id for our SKU (e.g. an Allegro offer id), learnt from the channel.
CREATE TABLE hub.channel_listing (
    channel     text NOT NULL,
    sku         text NOT NULL,
    offer_id    text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    transfer_id uuid NOT NULL,
    PRIMARY KEY (channel, sku),
    UNIQUE (channel, offer_id)
);

-- One row per pending change to a marketplace, written in the transaction that computed it.
CREATE TABLE hub.outbox (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel             text NOT NULL,
    sku                 text NOT NULL,
    field               text NOT NULL CHECK (field IN ('price', 'quantity')),
    payload             jsonb NOT NULL,
    offer_version       bigint NOT NULL,
    idempotency_key     text NOT NULL UNIQUE,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sent', 'failed', 'superseded')),
    attempts            integer NOT NULL DEFAULT 0,
    request_id          text,
    response            jsonb,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    created_transfer_id uuid NOT NULL,
    sent_transfer_id    uuid
);
CREATE INDEX outbox_pending_idx ON hub.outbox (channel, id) WHERE status = 'pending';
CREATE INDEX outbox_sku_idx ON hub.outbox (channel, sku, field, offer_version);

-- Rows that failed validation, with the reason; never silently dropped.
CREATE TABLE hub.quarantine (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset        text NOT NULL,
    source         text NOT NULL,
    transfer_id    uuid NOT NULL,
    record_key     text,
    record_no      integer,
    source_line    integer,
    expectation    text NOT NULL,
    column_name    text,
    observed_value text,
    reason         text NOT NULL,
    raw            jsonb NOT NULL,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    resolved_transfer_id uuid
);
CREATE INDEX quarantine_open_idx ON hub.quarantine (dataset, source, record_key) WHERE status = 'open';

-- Incremental extraction state per source and dataset.
CREATE TABLE hub.source_watermark (
    source      text NOT NULL,
    dataset     text NOT NULL,
    watermark   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    transfer_id uuid NOT NULL,
    PRIMARY KEY (source, dataset)
);

-- Last successful download of each feed, for conditional GET and change detection.
CREATE TABLE hub.source_fetch (
    source         text NOT NULL,
    location       text NOT NULL,
    etag           text,
    last_modified  text,
    sha256         text NOT NULL,
    size_bytes     bigint NOT NULL,
    fetched_at     timestamptz NOT NULL DEFAULT now(),
    transfer_id    uuid NOT NULL,
    PRIMARY KEY (source, location)
);

-- Last file written for each feed channel.
CREATE TABLE hub.feed_state (
    channel     text PRIMARY KEY,
    path        text NOT NULL,
    sha256      text NOT NULL,
    item_count  integer NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now(),
    transfer_id uuid NOT NULL
);

-- Per-run staging (rows keyed by transfer); raw text as delivered, typed during merge.
CREATE UNLOGGED TABLE staging.erp_product (
    transfer_id       uuid NOT NULL,
    record_no         integer NOT NULL,
    sku               text,
    gtin              text,
    name              text,
    brand             text,
    category          text,
    description       text,
    purchase_price    text,
    currency          text,
    vat_rate          text,
    stock             text,
    reserved          text,
    active            text,
    source_updated_at text
);
CREATE INDEX staging_erp_product_idx ON staging.erp_product (transfer_id);

CREATE UNLOGGED TABLE staging.supplier_offer (
    transfer_id    uuid NOT NULL,
    supplier       text NOT NULL,
    record_no      integer NOT NULL,
    source_line    integer,
    supplier_sku   text,
    gtin           text,
    name           text,
    purchase_price text,
    currency       text,
    quantity       text
);
CREATE INDEX staging_supplier_offer_idx ON staging.supplier_offer (transfer_id);
