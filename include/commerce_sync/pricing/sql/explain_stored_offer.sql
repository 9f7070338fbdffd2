-- explain: the stored offer of %(sku)s on %(channel)s.
SELECT price, currency, quantity, availability, cost, floor_price, floor_applied, max_price_applied,
       rule_id, rule_version, rule_level, cost_source, exchange_rate, version, published_version, computed_at,
       transfer_id
FROM hub.channel_offer WHERE channel = %(channel)s AND sku = %(sku)s
