"""Training internals: explicit, resumable checkpoints and the training loop used by ``tasks.train``."""
