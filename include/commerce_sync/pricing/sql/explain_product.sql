-- explain: the product row of %(sku)s.
SELECT sku, name, brand, category, purchase_price, currency, vat_rate, active, version, updated_at, transfer_id
FROM hub.product WHERE sku = %(sku)s
