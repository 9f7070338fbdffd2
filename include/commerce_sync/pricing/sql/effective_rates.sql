-- Per currency, the newest rate into %(quote)s valid today.
SELECT DISTINCT ON (currency) currency, rate FROM hub.exchange_rate
WHERE quote = %(quote)s AND valid_on <= current_date ORDER BY currency, valid_on DESC
