"""Observability: Prometheus metrics of requests, storage, the pool, LLM and embeddings calls,
auth failures, compactions and recalls (`metrics.py`), and the helpers that feed them."""
