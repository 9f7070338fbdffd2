-- Fragment (incremental run): restricts the rows aliased {t} to the SKUs in pricing_scope.
-- Put into create_pricing_base.sql as {scope} (t = p) and {stock_scope} (t = st).
JOIN pricing_scope AS s ON s.sku = {t}.sku
