-- The channel's last computation: config fingerprint, incremental bound and offer count.
SELECT config_sha256, inputs_seen_until, offer_count FROM hub.pricing_state WHERE channel = %(channel)s
