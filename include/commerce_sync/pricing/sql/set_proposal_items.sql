-- The number of items of a new proposal.
UPDATE hub.price_proposal SET items = %(items)s WHERE proposal_id = %(proposal_id)s
