"""Training: losses (focal, BCE, weighted BCE), the two-phase fit with resumable checkpoints
(``fit``), and the runtime set-up every stage needs (``runtime``: seeds, determinism, precision,
distribution strategy)."""
