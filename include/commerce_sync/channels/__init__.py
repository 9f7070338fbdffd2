"""Channels: marketplace API clients and feed writers."""
