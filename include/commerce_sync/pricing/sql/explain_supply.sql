-- explain: the chosen supplier offer of %(sku)s.
SELECT supplier, supplier_sku, purchase_price, currency, chosen_quantity, total_quantity, policy, updated_at
FROM hub.sku_supply WHERE sku = %(sku)s
