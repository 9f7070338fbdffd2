-- One pricing rule into pricing_rule_param (run with executemany).
INSERT INTO pricing_rule_param
VALUES (%(rule_id)s, %(version)s, %(margin_pct)s, %(margin_amount)s, %(commission_pct)s, %(fixed_fee)s,
        %(min_margin_pct)s, %(rounding)s, %(min_price)s, %(max_price)s)
