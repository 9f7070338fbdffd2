-- explain: units held by marketplace orders that the ERP's figures do not include yet (0 when none).
SELECT coalesce((SELECT quantity FROM hub.reservation_outstanding WHERE sku = %(sku)s), 0)
