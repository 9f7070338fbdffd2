-- Approval: the approved prices of offer_change (create_held_change.sql) are written to the offers.
UPDATE hub.channel_offer AS t SET
    price = c.price, currency = c.currency, cost = c.cost, floor_price = c.floor_price,
    floor_applied = c.floor_applied, max_price_applied = c.max_price_applied, rule_id = c.rule_id,
    rule_version = c.rule_version, rule_level = c.rule_level, cost_source = c.cost_source,
    exchange_rate = c.exchange_rate, row_hash = c.row_hash, version = c.new_version, computed_at = now(),
    transfer_id = %(transfer_id)s
FROM offer_change AS c
WHERE t.channel = c.channel AND t.sku = c.sku
