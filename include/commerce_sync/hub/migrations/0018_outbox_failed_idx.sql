-- Every publish reads the channel's backlog twice (before and after sending): pending rows come from
-- outbox_pending_idx, and the rows that failed in the last day from this index. Before it, the failed
-- count scanned all of the channel's outbox rows: about 1 s per call with 9M rows (1M SKUs).
CREATE INDEX outbox_failed_idx ON hub.outbox (channel, created_at) WHERE status = 'failed';
