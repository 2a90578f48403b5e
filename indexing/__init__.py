"""Files -> chunks -> embeddings -> FAISS + SQLite chunk store, and retrieval over them."""
