"""Marketplace orders in the hub: import, stock reservations, the ERP hand-off, oversold lines.

- :mod:`.store` stores one batch of orders a marketplace reported (idempotent by its ids), reserves and
  releases stock, detects oversold lines and keeps the channel's cursor, in one transaction.
- :mod:`.importer` drives a channel's reader batch by batch and pushes the new quantities to every
  channel through the pricing engine's incremental run (quantity-only changes enqueue quantity only).
- :mod:`.erp` hands ready orders to the ERP exactly once (key ``channel:order_id``) and cancels them
  there when the marketplace cancels them; reservations end when the ERP's figures include the order.
"""
