"""The store: the only package that touches a database. `protocol` is the interface the rest of
the service holds; `opening` turns DATABASE_URL into a migrated store: `sqlite`, the embedded
store (one file), or `postgres`, the shared one for several processes and machines. Both keep
the same records (`records`) and answer the same contract. `migrations` holds the schema's
history for both."""
