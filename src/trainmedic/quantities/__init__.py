"""Quantities: statistics with on-device state, updated on the hot path without host syncs and
read by the host once per schedule tick."""
