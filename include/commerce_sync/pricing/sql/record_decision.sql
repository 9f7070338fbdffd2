-- The decision on proposal %(proposal_id)s, who made it, when, and the ledger row that records it.
UPDATE hub.price_proposal SET status = %(decision)s, decided_by = %(by)s, decided_at = %(at)s,
       decision_transfer_id = %(transfer_id)s
WHERE proposal_id = %(proposal_id)s
