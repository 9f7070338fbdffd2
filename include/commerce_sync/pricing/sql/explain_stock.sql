-- explain: the stock rows of %(sku)s, per location.
SELECT location, quantity, reserved, updated_at FROM hub.stock WHERE sku = %(sku)s ORDER BY location
