-- Approval: offer_change (as create_offer_change.sql makes it) from the pending items of proposal
-- %(proposal_id)s whose live price is still the one they were proposed against. The proposed price
-- part with the live stock; {row_hash}: row_hash.sql over o and i.price_hash.
CREATE TEMP TABLE offer_change ON COMMIT DROP AS
SELECT i.channel, i.sku, i.price, i.currency, o.quantity, o.availability, i.cost, i.floor_price, i.floor_applied,
       i.max_price_applied, i.rule_id, i.rule_version, i.rule_level, i.cost_source, i.exchange_rate,
       i.price_hash, {row_hash} AS row_hash,
       o.price AS old_price, o.currency AS old_currency, o.quantity AS old_quantity, o.version + 1 AS new_version,
       true AS held, p.version AS product_version, p.transfer_id AS product_transfer_id
FROM hub.price_proposal_item AS i
JOIN hub.channel_offer AS o ON o.channel = i.channel AND o.sku = i.sku
JOIN hub.product AS p ON p.sku = i.sku
WHERE i.proposal_id = %(proposal_id)s AND i.status = 'pending'
  AND o.price = i.old_price AND o.currency = i.currency
