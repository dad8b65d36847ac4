"""Bounces: reading the delivery reports and auto-replies that come back to the VERP address."""
