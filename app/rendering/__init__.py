"""Templates: find them on disk, say which variables they need, render subject, HTML and text.
Knows Jinja, nothing of HTTP or SMTP."""
