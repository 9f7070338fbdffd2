-- Approval: the pending items of proposal %(proposal_id)s that were applied (in offer_change).
UPDATE hub.price_proposal_item AS i SET status = 'applied' FROM offer_change AS c
WHERE i.proposal_id = %(proposal_id)s AND i.sku = c.sku AND i.status = 'pending'
