-- Read-back reconciliation: every difference found between what the hub last published to a
-- marketplace channel and what the channel shows, with the action taken (append-only history).
CREATE TABLE hub.channel_reconciliation (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel         text NOT NULL,
    sku             text NOT NULL,
    field           text NOT NULL CHECK (field IN ('price', 'quantity', 'missing')),
    hub_value       jsonb,
    channel_value   jsonb,
    action          text NOT NULL CHECK (action IN ('requeued', 'adopted', 'reported')),
    outbox_id       bigint,
    found_at        timestamptz NOT NULL DEFAULT now(),
    transfer_id     uuid NOT NULL
);
CREATE INDEX channel_reconciliation_idx ON hub.channel_reconciliation (channel, sku, found_at);
