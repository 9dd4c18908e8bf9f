"""Services: what the API does, between the routers (HTTP) and the repositories (storage).

- `auth_service`, `memory_service`, `supabase_client`: the seed's three modules, at its paths.
- `auth/`: verifying access tokens (keys, JWKS, cache) and dev tokens.
- `chat/`: chat turns, streaming and the LLM client.
- `storage/`: opening storage (pools, schema, the embedded PostgreSQL).
- `container`: wires them into the one `Services` object the app keeps per process.
"""
