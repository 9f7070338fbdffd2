-- The held moves not yet proposed (pending or rejected with the same price hash) become items of
-- proposal %(proposal_id)s.
INSERT INTO hub.price_proposal_item
    (proposal_id, channel, sku, old_price, price, move_pct, currency, cost, floor_price, floor_applied,
     max_price_applied, rule_id, rule_version, rule_level, cost_source, exchange_rate, price_hash)
SELECT %(proposal_id)s, c.channel, c.sku, c.old_price, c.price, c.move_pct, c.currency, c.cost, c.floor_price,
       c.floor_applied, c.max_price_applied, c.rule_id, c.rule_version, c.rule_level, c.cost_source,
       c.exchange_rate, c.price_hash
FROM offer_change AS c
WHERE c.held AND NOT EXISTS (
    SELECT 1 FROM hub.price_proposal_item AS i
    WHERE i.channel = c.channel AND i.sku = c.sku AND i.price_hash = c.price_hash
      AND i.status IN ('pending', 'rejected'))
