-- Pending proposals of the channel left without a pending item are superseded.
UPDATE hub.price_proposal AS p SET status = 'superseded'
WHERE p.status = 'pending' AND p.channel = %(channel)s
  AND NOT EXISTS (SELECT 1 FROM hub.price_proposal_item AS i WHERE i.proposal_id = p.proposal_id
                  AND i.status = 'pending')
