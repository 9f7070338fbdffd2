-- Serialise the writers of one channel's offers (computation, approval) until the transaction ends.
-- %(lock)s: 'channel_offer:<channel id>'.
SELECT pg_advisory_xact_lock(hashtext(%(lock)s))
