-- The channel's computation state: config fingerprint, bound for the next incremental run, offer count.
INSERT INTO hub.pricing_state (channel, config_sha256, inputs_seen_until, computed_at, transfer_id, offer_count)
VALUES (%(channel)s, %(config_sha256)s, %(bound)s, now(), %(transfer_id)s, %(offer_count)s)
ON CONFLICT (channel) DO UPDATE SET config_sha256 = EXCLUDED.config_sha256,
    inputs_seen_until = EXCLUDED.inputs_seen_until, computed_at = EXCLUDED.computed_at,
    transfer_id = EXCLUDED.transfer_id, offer_count = EXCLUDED.offer_count
