-- Held rows whose stock did not change either are left out of the write.
DELETE FROM offer_change WHERE held AND row_hash = old_row_hash
