-- Incremental run: the SKUs whose inputs changed after %(since)s (the previous run's bound):
-- products, stock and supply rows updated, stock/supply rows deleted, and order reservations made,
-- released or re-quantified (hub.stock_reservation; the ERP taking an order over shows as a product update).
-- CREATE TABLE AS takes no server-side parameters: run with a ClientCursor.
CREATE TEMP TABLE pricing_scope ON COMMIT DROP AS
SELECT sku FROM hub.product WHERE updated_at > %(since)s
UNION SELECT sku FROM hub.stock WHERE updated_at > %(since)s
UNION SELECT sku FROM hub.sku_supply WHERE updated_at > %(since)s
UNION SELECT sku FROM hub.pricing_input_deletion WHERE deleted_at > %(since)s
UNION SELECT sku FROM hub.stock_reservation WHERE updated_at > %(since)s
