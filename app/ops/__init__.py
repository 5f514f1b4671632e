"""Operating the service: structured logs, Prometheus metrics, and what readiness says about
the SMTP server."""
