"""Python values in the text forms the SQL functions take."""

from __future__ import annotations


def vector_text(embedding: list[float] | None) -> str | None:
    """An embedding in pgvector's text form (`[0.1,0.2]`); None stays None."""
    if embedding is None:
        return None
    return "[" + ",".join(repr(float(x)) for x in embedding) + "]"
