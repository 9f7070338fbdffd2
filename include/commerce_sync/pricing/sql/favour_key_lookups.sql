-- Incremental run: a few thousand key lookups beat scanning the whole product and stock tables;
-- PostgreSQL's spinning-disk default (4.0) would choose the scans up to about 1 percent of the rows.
-- For this transaction only.
SET LOCAL random_page_cost = 1.1
