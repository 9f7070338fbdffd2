-- Held rows keep the live price (and what it was made from); their stock still goes out.
-- {price_hash}: price_hash.sql over o; {row_hash}: row_hash.sql over c and that price hash.
UPDATE offer_change AS c SET
    price = o.price, currency = o.currency, cost = o.cost, floor_price = o.floor_price,
    floor_applied = o.floor_applied, max_price_applied = o.max_price_applied, rule_id = o.rule_id,
    rule_version = o.rule_version, rule_level = o.rule_level, cost_source = o.cost_source,
    exchange_rate = o.exchange_rate, price_hash = {price_hash},
    row_hash = {row_hash}
FROM hub.channel_offer AS o
WHERE c.held AND o.channel = c.channel AND o.sku = c.sku
