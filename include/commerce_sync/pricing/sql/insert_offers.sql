-- New offers of offer_change are inserted.
INSERT INTO hub.channel_offer
    (channel, sku, price, currency, quantity, availability, cost, floor_price, floor_applied, max_price_applied,
     rule_id, rule_version, rule_level, cost_source, exchange_rate, row_hash, version, computed_at, transfer_id)
SELECT channel, sku, price, currency, quantity, availability, cost, floor_price, floor_applied, max_price_applied,
       rule_id, rule_version, rule_level, cost_source, exchange_rate, row_hash, new_version, now(), %(transfer_id)s
FROM offer_change
WHERE old_row_hash IS NULL
