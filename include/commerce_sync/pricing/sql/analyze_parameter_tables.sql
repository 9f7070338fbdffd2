-- Statistics for the parameter tables, so the planner sizes their joins right.
-- Three statements, sent in one round trip.
ANALYZE pricing_rule_param;
ANALYZE pricing_override;
ANALYZE pricing_rate
