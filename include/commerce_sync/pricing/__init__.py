"""Pricing and stock rules per channel."""
