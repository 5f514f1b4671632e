"""The store: the only package that touches a database. `sqlite` is the embedded store (one
file), `postgres` the shared one for several processes and machines; both keep the same records
(`records`) and answer the same contract. `migrations` holds the schema's history."""
