-- Incremental run: a key and statistics for pricing_scope (two statements, one round trip).
ALTER TABLE pricing_scope ADD PRIMARY KEY (sku);
ANALYZE pricing_scope
