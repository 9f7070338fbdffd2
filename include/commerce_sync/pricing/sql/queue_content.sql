-- The content outbox field, for channels whose kind declares it: one 'content' row per offer whose
-- product content (name, description, GTIN, brand, category) differs from what was last queued for
-- the channel (hub.channel_offer.content_sha256). Looked at: products changed after %(since)s (every
-- offer of the channel when NULL: a full run) and the offers this run created (offer_change). Content
-- rows carry the offer's current version and never touch price or quantity rows, so a content change
-- resends no price and a price change resends no content. Older pending content rows of the SKU are
-- superseded; the key covers the run, so content changed back to an earlier value is queued again.
-- Returns: content rows queued, pending content rows superseded.
WITH content AS MATERIALIZED (
    SELECT co.sku, co.version, c.payload,
           encode(sha256(convert_to(c.payload::text, 'UTF8')), 'hex') AS content_sha256, co.content_sha256 AS old_sha256
    FROM hub.channel_offer AS co
    JOIN hub.product AS p ON p.sku = co.sku
    CROSS JOIN LATERAL (SELECT jsonb_build_object(
        'name', p.name, 'description', p.description, 'gtin', p.gtin, 'brand', p.brand, 'category', p.category
    ) AS payload) AS c
    WHERE co.channel = %(channel)s
      AND (%(since)s::timestamptz IS NULL OR p.updated_at > %(since)s::timestamptz
           OR co.sku IN (SELECT n.sku FROM offer_change AS n WHERE n.old_row_hash IS NULL))
), changed AS MATERIALIZED (
    SELECT * FROM content WHERE content_sha256 IS DISTINCT FROM old_sha256
), marked AS (
    UPDATE hub.channel_offer AS co SET content_sha256 = ch.content_sha256
    FROM changed AS ch
    WHERE co.channel = %(channel)s AND co.sku = ch.sku
    RETURNING 1
), superseded AS (
    UPDATE hub.outbox AS o SET status = 'superseded', error = 'superseded by newer content'
    FROM changed AS ch
    WHERE o.channel = %(channel)s AND o.sku = ch.sku AND o.field = 'content' AND o.status = 'pending'
    RETURNING 1
), enqueued AS (
    INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, created_transfer_id)
    SELECT %(channel)s, ch.sku, 'content', ch.payload, ch.version,
           encode(sha256(convert_to(concat_ws('|', %(channel)s::text, ch.sku, 'content', ch.version,
                                              ch.content_sha256, %(transfer_id)s::text), 'UTF8')), 'hex'),
           %(transfer_id)s::uuid
    FROM changed AS ch
    RETURNING 1
)
SELECT (SELECT count(*) FROM enqueued), (SELECT count(*) FROM superseded), (SELECT count(*) FROM marked)
