"""Delivery: the worker that claims due notifications, one attempt (render, build the MIME
message, send over SMTP, record the outcome) and the retry policy. The only package that
imports aiosmtplib; it turns SMTP failures into our transient, permanent and settings errors."""
