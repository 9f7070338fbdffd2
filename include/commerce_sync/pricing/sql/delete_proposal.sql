-- A new proposal that got no item (every held move was already proposed) is removed.
DELETE FROM hub.price_proposal WHERE proposal_id = %(proposal_id)s
