-- The items of proposal %(proposal_id)s still pending get %(status)s: 'stale' after an approval (their
-- live price moved meanwhile), 'rejected' after a rejection.
UPDATE hub.price_proposal_item SET status = %(status)s
WHERE proposal_id = %(proposal_id)s AND status = 'pending'
