-- Fragment: the hash of the price part of an offer row aliased {t}.
-- Both the computation and the held-move substitution hash through this (and row_hash.sql), so a
-- row's hash never depends on which path wrote it. Composed by compute.price_hash.
md5(concat_ws('|', {t}.price, {t}.currency, {t}.cost, {t}.floor_price, {t}.floor_applied,
                   {t}.max_price_applied, {t}.rule_id, {t}.rule_version, {t}.rule_level, {t}.cost_source,
                   {t}.exchange_rate))
