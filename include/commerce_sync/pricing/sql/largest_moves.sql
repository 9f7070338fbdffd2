-- The three largest price moves above %(move_pct)s, for the breaker's message.
SELECT sku, old_price, price, move_pct FROM offer_change WHERE move_pct > %(move_pct)s
ORDER BY move_pct DESC, sku LIMIT 3
