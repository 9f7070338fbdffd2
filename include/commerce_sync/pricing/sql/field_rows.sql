-- Fragment: one row per changed field (price, quantity) of offer_change, read in one scan, with what
-- the audit row records about the offer and the idempotency key (computed once here, so the outbox
-- row and the audit row carry the same one). Put into write_field_changes.sql as {field_rows}.
SELECT f.*,
       encode(sha256(convert_to(concat_ws('|', f.channel, f.sku, f.field, f.new_version, f.payload::text),
                                'UTF8')), 'hex') AS idempotency_key
FROM (
    SELECT c.channel, c.sku, v.field, c.new_version,
           CASE v.field WHEN 'price' THEN jsonb_build_object('amount', c.price::text, 'currency', c.currency)
                        ELSE jsonb_build_object('value', c.quantity) END AS payload,
           CASE v.field WHEN 'price' THEN c.old_price::text ELSE c.old_quantity::text END AS old_value,
           CASE v.field WHEN 'price' THEN c.price::text ELSE c.quantity::text END AS new_value,
           c.rule_id, c.rule_version, c.currency, c.cost, c.floor_applied, c.rule_level, c.cost_source,
           c.exchange_rate, c.held, c.product_version, c.product_transfer_id
    FROM offer_change AS c
    CROSS JOIN LATERAL (VALUES
        ('price', c.old_price IS DISTINCT FROM c.price OR c.old_currency IS DISTINCT FROM c.currency),
        ('quantity', c.old_quantity IS DISTINCT FROM c.quantity)
    ) AS v (field, changed)
    WHERE v.changed  -- the values of a changed field only are built
) AS f
