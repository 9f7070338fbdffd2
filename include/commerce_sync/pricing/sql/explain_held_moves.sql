-- explain: the five latest proposal items (held price moves) of %(sku)s on %(channel)s.
SELECT i.proposal_id, i.status, i.old_price, i.price, i.move_pct, p.status AS proposal_status,
       p.decided_by, p.decided_at, p.created_at
FROM hub.price_proposal_item AS i
JOIN hub.price_proposal AS p ON p.proposal_id = i.proposal_id
WHERE i.channel = %(channel)s AND i.sku = %(sku)s ORDER BY p.created_at DESC LIMIT 5
