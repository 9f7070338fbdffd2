-- The price-change report's percentage must hold every change between two valid prices: a price
-- of 0.0001 (the smallest numeric(14, 4) above 0) rising to 9,999,999,999.9999 is about +1e16 %.
-- numeric(12, 2) stopped at 1e10 %, so one legitimate price jump failed the whole supplier batch
-- (NumericValueOutOfRange) and was retried as if transient.
ALTER TABLE hub.supplier_price_change ALTER COLUMN change_pct TYPE numeric(20, 2);
