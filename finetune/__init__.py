"""RAFT-style grounded QA data and LoRA training of the reader."""
