-- A new proposal for the held moves of this run (its item count is set by set_proposal_items.sql).
INSERT INTO hub.price_proposal (proposal_id, channel, items, created_transfer_id)
VALUES (%(proposal_id)s, %(channel)s, 0, %(transfer_id)s)
