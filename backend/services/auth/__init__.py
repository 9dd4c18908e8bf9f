"""Access tokens: the verifier `get_current_user` uses, its keys (secret, JWKS) and dev tokens."""
