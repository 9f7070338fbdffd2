-- One effective exchange rate into the channel's currency into pricing_rate (run with executemany).
INSERT INTO pricing_rate VALUES (%(currency)s, %(rate)s)
