"""rag: question answering over your own documents with a small, LoRA-tuned local reader."""

__version__ = "0.1.0"
