-- Pending items of re-evaluated SKUs whose proposed price is no longer what the rules compute.
UPDATE hub.price_proposal_item AS i SET status = 'superseded'
WHERE i.status = 'pending' AND i.channel = %(channel)s
  AND EXISTS (SELECT 1 FROM computed_offer AS c WHERE c.sku = i.sku)
  AND NOT EXISTS (SELECT 1 FROM offer_change AS c WHERE c.sku = i.sku AND c.held AND c.price_hash = i.price_hash)
