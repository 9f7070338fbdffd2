-- The channel's offer count (only when hub.pricing_state has none yet: a scan at 1M offers).
SELECT count(*) FROM hub.channel_offer WHERE channel = %(channel)s
