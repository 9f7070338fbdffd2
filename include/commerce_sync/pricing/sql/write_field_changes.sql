-- The changed fields of offer_change, written in one statement ({field_rows}: field_rows.sql):
-- 1. audit.change: the channel's price/quantity changes with the rule that produced them and the
--    offer version (and, for outbox channels, the idempotency key of the outbox row that carries the
--    change). Their count and digest ({digest} over {row_text}: audit.changes.DIGEST / ROW_TEXT) are
--    taken from what the insert returns, so the rows are not read back (the digest is the one
--    audit.changes.change_digest computes from the table). Run under audit.changes.sort_memory.
-- 2. For outbox channels (%(outbox)s), older unsent outbox rows of the same field are superseded. The
--    sub-statements share one snapshot, so this never sees the rows enqueued by 3.
-- 3. The outbox rows: a plain INSERT. The key covers a new offer version, and versions only grow under
--    the channel lock, so a duplicate cannot arise. If it ever did, the unique index refuses the whole
--    run instead of silently dropping a change (and the check costs one index descent, not two as
--    ON CONFLICT would).
-- Returns: change count, digest, outbox rows superseded, outbox rows added.
WITH f AS MATERIALIZED ({field_rows}),
recorded AS (
    INSERT INTO audit.change AS c (transfer_id, dataset, sku, channel, field, old_value, new_value, rule_id,
                                   rule_version, source_ref)
    SELECT %(transfer_id)s, 'channel_offer', f.sku, f.channel, f.field, f.old_value, f.new_value, f.rule_id,
           f.rule_version,
           jsonb_build_object('offer_version', f.new_version,
                              'idempotency_key', CASE WHEN %(outbox)s THEN f.idempotency_key END,
                              'currency', f.currency, 'cost', f.cost::text, 'floor_applied', f.floor_applied,
                              'rule_level', f.rule_level, 'cost_source', f.cost_source,
                              'exchange_rate', f.exchange_rate::text, 'held', f.held,
                              'product_version', f.product_version, 'product_transfer_id', f.product_transfer_id)
    FROM f
    RETURNING {row_text} AS row_text
), superseded AS (
    UPDATE hub.outbox AS o SET status = 'superseded'
    FROM f
    WHERE %(outbox)s AND o.status = 'pending' AND o.channel = f.channel AND o.sku = f.sku AND o.field = f.field
      AND o.offer_version < f.new_version
    RETURNING 1
), enqueued AS (
    INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, created_transfer_id)
    SELECT f.channel, f.sku, f.field, f.payload, f.new_version, f.idempotency_key, %(transfer_id)s
    FROM f
    WHERE %(outbox)s
    RETURNING 1
)
SELECT {digest}, (SELECT count(*) FROM superseded), (SELECT count(*) FROM enqueued)
FROM recorded AS r
