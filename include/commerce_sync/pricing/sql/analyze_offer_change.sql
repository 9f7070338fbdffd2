-- Full run: statistics for the joins over offer_change (large then). An incremental run's few
-- thousand rows are estimated well enough from the table's size, and ANALYZE would cost more.
ANALYZE offer_change
