-- Everything the guards and the ledger row need from offer_change, in one scan. A NULL limit (no
-- breakers, no cap) counts nothing. Read again after moves were held, which changes the rows' floor
-- flags and drops the ones left unchanged.
SELECT count(*) FILTER (WHERE move_pct > %(breaker_move_pct)s) AS moves,
       count(*) FILTER (WHERE old_quantity > 0 AND quantity = 0) AS stockouts,
       count(*) FILTER (WHERE move_pct > %(cap_move_pct)s) AS large_moves,
       count(*) AS changed, count(*) FILTER (WHERE floor_applied) AS floors,
       count(*) FILTER (WHERE old_row_hash IS NULL) AS new_offers
FROM offer_change
