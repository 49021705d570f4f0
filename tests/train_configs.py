"""A complete TrainConfig for tests: the schema has no defaults, so tests name a base here and
override what each one is about."""

from cxr.training.fit import TrainConfig

BASE = {"head_epochs": 3, "head_learning_rate": 1e-3, "finetune_epochs": 3,
        "finetune_learning_rate": 1e-5, "patience": 3, "reduce_lr_patience": 2,
        "reduce_lr_factor": 0.5, "min_learning_rate": 1e-5, "schedule": "plateau",
        "warmup_epochs": 0, "weight_decay": 0.0, "jit_compile": False}


def train_config(**overrides) -> TrainConfig:
    return TrainConfig(**{**BASE, **overrides})
