-- A send that may have reached the channel without its outcome being recorded (the publisher died,
-- or lost the database, between the channel's answer and its commit) leaves its outbox rows pending,
-- as if never sent. The publisher notes each attempt here, on its own connection and committed
-- before the request goes out, so the next run knows which pending rows are in doubt and reads the
-- channel before sending them again (hub.outbox rows are locked by the sending transaction, which is
-- why this is a table of its own and not a column of hub.outbox).
CREATE TABLE hub.outbox_attempt (
    outbox_id    bigint NOT NULL,
    channel      text NOT NULL,
    transfer_id  uuid NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (outbox_id, transfer_id)
);
CREATE INDEX outbox_attempt_channel_idx ON hub.outbox_attempt (channel, outbox_id);
