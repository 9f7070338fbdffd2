-- pricing_base: per SKU in scope, the inputs of its offer: the rule by override precedence
-- (sku > brand > category > the channel's default %(default_rule)s), ERP and supplier cost converted
-- into the channel's currency, and the available quantity: own stock - ERP reserved - units held by
-- marketplace orders the ERP's figures do not include yet (hub.reservation_outstanding) + chosen supply.
-- {scope}, {stock_scope} and {held_scope}: empty (full run) or scope_join.sql over p, st and ro
-- (incremental run).
-- CREATE TABLE AS takes no server-side parameters: run with a ClientCursor.
CREATE TEMP TABLE pricing_base ON COMMIT DROP AS
WITH product AS (
    SELECT p.* FROM hub.product AS p {scope}
), own AS (
    SELECT st.sku, sum(st.quantity) AS quantity, sum(st.reserved) AS reserved
    FROM hub.stock AS st {stock_scope}
    GROUP BY st.sku
), held AS (
    SELECT ro.sku, ro.quantity FROM hub.reservation_outstanding AS ro {held_scope}
)
SELECT p.sku, p.active, p.vat_rate, p.version AS product_version, p.transfer_id AS product_transfer_id,
       p.currency AS erp_currency, ss.currency AS supply_currency,
       coalesce(os.rule_id, ob.rule_id, oc.rule_id, %(default_rule)s) AS rule_id,
       CASE WHEN os.rule_id IS NOT NULL THEN 'sku' WHEN ob.rule_id IS NOT NULL THEN 'brand'
            WHEN oc.rule_id IS NOT NULL THEN 'category' ELSE 'default' END AS rule_level,
       er.rate AS erp_rate, round(p.purchase_price * er.rate, 4) AS erp_cost,
       p.active AND coalesce(ss.chosen_quantity, 0) > 0 AS supply_contributes,
       sr.rate AS supply_rate, round(ss.purchase_price * sr.rate, 4) AS supply_cost,
       coalesce(own.quantity, 0) - coalesce(own.reserved, 0) - coalesce(held.quantity, 0)
         + coalesce(ss.chosen_quantity, 0) AS available
FROM product AS p
LEFT JOIN own ON own.sku = p.sku
LEFT JOIN held ON held.sku = p.sku
LEFT JOIN hub.sku_supply AS ss ON ss.sku = p.sku
LEFT JOIN pricing_rate AS er ON er.currency = p.currency
LEFT JOIN pricing_rate AS sr ON sr.currency = ss.currency
LEFT JOIN pricing_override AS os ON os.level = 'sku' AND os.match = p.sku
LEFT JOIN pricing_override AS ob ON ob.level = 'brand' AND ob.match = p.brand
LEFT JOIN pricing_override AS oc ON oc.level = 'category' AND oc.match = p.category
