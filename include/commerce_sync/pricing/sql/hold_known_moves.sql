-- Change cap: a move matching a pending or rejected proposal item (same price hash) stays held.
UPDATE offer_change AS c SET held = true
WHERE c.old_price IS NOT NULL AND EXISTS (
    SELECT 1 FROM hub.price_proposal_item AS i
    WHERE i.channel = c.channel AND i.sku = c.sku AND i.price_hash = c.price_hash
      AND i.status IN ('pending', 'rejected'))
