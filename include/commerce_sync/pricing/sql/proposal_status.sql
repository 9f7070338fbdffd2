-- A proposal's channel and status.
SELECT channel, status FROM hub.price_proposal WHERE proposal_id = %(proposal_id)s
