-- Webhook deliveries a channel's endpoint accepted (signature verified), one row per delivery id: a
-- delivery sent twice is recognised and rings the doorbell once. A webhook is only a doorbell (it
-- triggers the channel's import); the polled cursor stays the truth, so rows here are never read to
-- import anything and may be pruned.
CREATE TABLE hub.webhook_delivery (
    channel      text NOT NULL,
    delivery_id  text NOT NULL,
    topic        text NOT NULL,
    resource_id  text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, delivery_id)
);
CREATE INDEX webhook_delivery_received_idx ON hub.webhook_delivery (received_at);
