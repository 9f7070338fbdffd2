-- computed_offer: the channel's offer for every SKU of pricing_base with a cost, by the formulas of
-- pricing/rules.py (cost, price with margin, fee, commission and VAT, floor, rounding, max price,
-- sellable stock after the buffers, capped at max_listed and ended (0) at or below end_at_or_below).
-- Each step is a LATERAL subquery fenced with OFFSET 0, so it is evaluated once per row. As plain CTEs
-- the planner inlined every step into each reference to it: the final price expression repeated the
-- rounding, cost and floor arithmetic some twenty times per row (2.5x the time of the whole statement).
-- CREATE TABLE AS takes no server-side parameters: run with a ClientCursor.
CREATE TEMP TABLE computed_offer ON COMMIT DROP AS
SELECT %(channel)s::text AS channel, b.sku, %(currency)s::char(3) AS currency,
       sl.sellable AS quantity,
       CASE WHEN sl.sellable > 0 THEN 'in_stock' ELSE 'out_of_stock' END AS availability,
       k.cost::numeric(14, 4) AS cost,
       p.floor_price::numeric(14, 2) AS floor_price,
       (CASE WHEN cp.candidate >= p.floor_price THEN cp.candidate
             WHEN r.rounding = '0.99' THEN ceil(p.floor_price + 0.01) - 0.01
             WHEN r.rounding = '0.05' THEN ceil(p.floor_price * 20) / 20
             ELSE p.floor_price END)::numeric(14, 2) AS price,
       cp.candidate < p.floor_price AS floor_applied,
       cp.max_price_applied,
       b.rule_id, r.version AS rule_version, b.rule_level,
       CASE WHEN k.supplier_cost THEN 'supplier' ELSE 'erp' END AS cost_source,
       k.rate::numeric(18, 8) AS exchange_rate,
       b.product_version, b.product_transfer_id
FROM pricing_base AS b
JOIN pricing_rule_param AS r ON r.rule_id = b.rule_id
CROSS JOIN LATERAL (
    SELECT s.supplier_cost, CASE WHEN s.supplier_cost THEN b.supply_cost ELSE b.erp_cost END AS cost,
           CASE WHEN s.supplier_cost THEN b.supply_rate ELSE b.erp_rate END AS rate,
           CASE WHEN %(gross)s THEN 1 + b.vat_rate ELSE 1 END AS tax
    FROM (SELECT b.supply_contributes AND b.supply_cost > b.erp_cost AS supplier_cost) AS s
    OFFSET 0
) AS k
CROSS JOIN LATERAL (
    SELECT (k.cost * (1 + r.margin_pct / 100) + r.margin_amount + r.fixed_fee) * (1 + r.commission_pct / 100) * k.tax
               AS raw_price,
           greatest(ceil((k.cost * (1 + r.min_margin_pct / 100) + r.fixed_fee) * (1 + r.commission_pct / 100) * k.tax
                         * 100) / 100,
                    coalesce(r.min_price, 0)) AS floor_price
    OFFSET 0
) AS p
CROSS JOIN LATERAL (
    SELECT CASE r.rounding WHEN '0.99' THEN round(p.raw_price + 0.01) - 0.01
                           WHEN '0.05' THEN round(p.raw_price * 20) / 20
                           ELSE round(p.raw_price, 2) END AS rounded_price
    OFFSET 0
) AS rd
CROSS JOIN LATERAL (
    SELECT coalesce(rd.rounded_price > r.max_price, false) AS max_price_applied,
           CASE WHEN rd.rounded_price > r.max_price THEN r.max_price ELSE rd.rounded_price END AS candidate
    OFFSET 0
) AS cp
CROSS JOIN LATERAL (
    SELECT CASE WHEN q.listed <= %(end_at_or_below)s::integer THEN 0 ELSE q.listed END AS sellable
    FROM (SELECT (CASE WHEN b.active
                       THEN least(coalesce(%(max_listed)s::integer, 2147483647),
                                  greatest(0, b.available - %(buffer)s::integer
                                              - ceil(greatest(b.available, 0) * %(buffer_pct)s::numeric / 100)))
                       ELSE 0 END)::integer AS listed) AS q
    OFFSET 0
) AS sl
WHERE k.cost > 0
