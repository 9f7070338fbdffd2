-- Product content (name, description, GTIN, brand, category) as an outbox field of its own, for the
-- channel kinds that declare it (registry outbox_fields): a content change is queued without resending
-- prices, and a price change without resending content. channel_offer.content_sha256 is the digest of
-- the content last queued for the channel's offer (NULL: never queued), so pricing queues a content row
-- only when the product's content differs from it.
ALTER TABLE hub.outbox DROP CONSTRAINT outbox_field_check;
ALTER TABLE hub.outbox ADD CONSTRAINT outbox_field_check CHECK (field IN ('price', 'quantity', 'content'));
ALTER TABLE hub.channel_offer ADD COLUMN content_sha256 text;
