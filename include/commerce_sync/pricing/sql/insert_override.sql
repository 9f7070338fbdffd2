-- One rule override of the channel into pricing_override (run with executemany).
INSERT INTO pricing_override VALUES (%(level)s, %(match)s, %(rule_id)s)
