"""Chat: memory-grounded turns, streaming, compaction, and the OpenAI-compatible LLM client."""
