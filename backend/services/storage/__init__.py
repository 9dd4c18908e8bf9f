"""Opening storage: the asyncpg pool and schema, the embedded PostgreSQL and its `auth.users`."""
