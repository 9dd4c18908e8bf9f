"""Recall: the conversation log's search, and the embeddings that make it hybrid."""
