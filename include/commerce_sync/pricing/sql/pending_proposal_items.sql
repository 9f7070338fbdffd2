-- Every pending item of a pending proposal, largest move first (the approval summary and its CSV).
SELECT i.proposal_id::text, i.channel, i.sku, p.name, i.old_price, i.price, i.currency, i.move_pct, i.cost,
       i.floor_price, i.floor_applied, i.rule_id, i.rule_version, i.rule_level, i.cost_source
FROM hub.price_proposal_item AS i
JOIN hub.price_proposal AS pr ON pr.proposal_id = i.proposal_id AND pr.status = 'pending'
LEFT JOIN hub.product AS p ON p.sku = i.sku
WHERE i.status = 'pending'
ORDER BY i.move_pct DESC, i.channel, i.sku
