"""Alerts: subscriptions, the outbox and the dispatcher that tells people of violations."""
