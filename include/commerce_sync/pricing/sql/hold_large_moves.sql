-- Change cap exceeded: every price move above the cap's %(move_pct)s is held.
UPDATE offer_change SET held = true WHERE move_pct > %(move_pct)s AND NOT held
