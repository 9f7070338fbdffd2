-- A proposal's status, locked until the decision is written (it may be decided concurrently).
SELECT status FROM hub.price_proposal WHERE proposal_id = %(proposal_id)s FOR UPDATE
