-- offer_change: the computed offers that are new or whose row hash changed, with the live offer's
-- values (old_*), its ctid (for update_offers.sql), the next version and the price move in percent.
-- {price_hash}: price_hash.sql over c; {row_hash}: row_hash.sql over c and p.price_hash.
CREATE TEMP TABLE offer_change ON COMMIT DROP AS
SELECT c.*, h.price_hash, h.row_hash, o.price AS old_price, o.currency AS old_currency,
       o.quantity AS old_quantity, o.row_hash AS old_row_hash, coalesce(o.version, 0) + 1 AS new_version,
       o.ctid AS old_ctid,
       CASE WHEN o.price > 0 AND o.currency = c.currency
            THEN round(abs(c.price - o.price) * 100 / o.price, 2) END AS move_pct,
       false AS held
FROM computed_offer AS c
CROSS JOIN LATERAL (SELECT {price_hash} AS price_hash) AS p
CROSS JOIN LATERAL (SELECT p.price_hash, {row_hash} AS row_hash) AS h
LEFT JOIN hub.channel_offer AS o ON o.channel = c.channel AND o.sku = c.sku
WHERE o.sku IS NULL OR o.row_hash IS DISTINCT FROM h.row_hash
