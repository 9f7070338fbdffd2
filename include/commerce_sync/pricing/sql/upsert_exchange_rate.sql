-- One configured exchange rate into hub.exchange_rate; an unchanged rate is not touched (rowcount 0).
INSERT INTO hub.exchange_rate AS t (currency, quote, valid_on, rate, source, transfer_id)
VALUES (%(currency)s, %(quote)s, %(valid_on)s, %(rate)s, %(source)s, %(transfer_id)s)
ON CONFLICT (currency, quote, valid_on) DO UPDATE SET
    rate = EXCLUDED.rate, source = EXCLUDED.source, updated_at = now(), transfer_id = EXCLUDED.transfer_id
WHERE (t.rate, t.source) IS DISTINCT FROM (EXCLUDED.rate, EXCLUDED.source)
