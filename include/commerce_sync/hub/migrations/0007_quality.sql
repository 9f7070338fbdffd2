-- Data quality gates (issue #4).
-- The row checks write failing rows straight into hub.quarantine with one INSERT ... SELECT; the
-- supplier merge then excludes them per (transfer, record): an index on both keeps that anti-join
-- an index lookup (0004's index on transfer_id alone serves retention).
CREATE INDEX quarantine_transfer_record_idx ON hub.quarantine (transfer_id, record_no);

-- The breaker "row count dropped more than X % against the last good batch" reads the newest
-- successful transfer of one source and dataset from the ledger.
CREATE INDEX transfer_source_dataset_idx ON audit.transfer (source, dataset, seq DESC) WHERE status = 'success';
