"""Adapting the embedder to the indexed documents: training pairs, fine-tuning, evaluation and
embedder generations (which model and vector collection serve)."""
