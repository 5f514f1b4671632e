"""Status webhooks: what a state change tells the caller's `callback_url`, and how it gets there.

`events` turns a state change into an outbox event (the table of statuses worth telling and the
JSON body); the stores write it in the same transaction as the change. `targets` decides which
URLs may be called (no SSRF), `signature` signs a body, `sender` POSTs it over one httpx pool,
and `dispatcher` claims due events from the store and delivers them with retries, wherever
delivery runs. May import the store's records and the API's schemas, never the HTTP routes.
"""
