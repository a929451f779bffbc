"""Alerting: turning alert decisions into messages people can act on, delivered once."""
