-- The run's parameter tables (rules, the channel's overrides, exchange rates into the channel's
-- currency), filled by insert_rule_param.sql, insert_override.sql and insert_rate.sql.
-- Three statements, sent in one round trip.
CREATE TEMP TABLE pricing_rule_param (
    rule_id text PRIMARY KEY, version text, margin_pct numeric, margin_amount numeric,
    commission_pct numeric, fixed_fee numeric, min_margin_pct numeric, rounding text,
    min_price numeric, max_price numeric) ON COMMIT DROP;
CREATE TEMP TABLE pricing_override (level text, match text, rule_id text, PRIMARY KEY (level, match))
    ON COMMIT DROP;
CREATE TEMP TABLE pricing_rate (currency char(3) PRIMARY KEY, rate numeric) ON COMMIT DROP
