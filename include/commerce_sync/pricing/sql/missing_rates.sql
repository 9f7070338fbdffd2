-- Cost currencies of pricing_base without an exchange rate into the channel's currency: how many
-- SKUs each, and one of them (the run fails with these).
SELECT currency, count(*), min(sku) FROM (
    SELECT erp_currency AS currency, sku FROM pricing_base WHERE erp_rate IS NULL
    UNION ALL
    SELECT supply_currency, sku FROM pricing_base WHERE supply_contributes AND supply_rate IS NULL
) AS m GROUP BY currency ORDER BY currency
