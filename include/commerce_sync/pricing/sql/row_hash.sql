-- Fragment: the hash of a whole offer row aliased {t}, over its price hash {price_hash} (an
-- expression: a column or price_hash.sql) and its stock. Composed by compute.row_hash.
md5(concat_ws('|', {price_hash}, {t}.quantity, {t}.availability))
