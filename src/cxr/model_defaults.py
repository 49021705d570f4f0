"""The embedded default's per-model training blocks (params.yaml `models:`), as plain data.

Why a module of its own: it is deliberately *not* a DVC dependency of any stage (dvc.yaml). A
stage reads its model block from params.yaml, which names every key (tests/test_params.py checks
that file and these values agree, key by key), and DVC tracks that block as a param
(`models.MODEL`). So a value here never reaches a stage's output, and changing one model's
schedule, here and in params.yaml, reruns that model's stages only, instead of every stage
that imports cxr.params. Why these schedules: the comment above `models:` in params.yaml.
"""

from __future__ import annotations

BACKBONE_SCHEDULE = {"head_epochs": 0, "head_learning_rate": 1e-4, "patience": 4,
                     "schedule": "cosine", "warmup_epochs": 1}

MODEL_DEFAULTS: dict[str, dict] = {
    "simple_cnn": {"head_epochs": 30, "head_learning_rate": 2e-3, "finetune_epochs": 0,
                   "patience": 8, "schedule": "cosine", "warmup_epochs": 1},
    "densenet121": {**BACKBONE_SCHEDULE, "finetune_epochs": 14, "finetune_learning_rate": 1e-3,
                    "weight_decay": 0.2, "options": {"batchnorm_momentum": 0.9}},
    "efficientnetb0": {**BACKBONE_SCHEDULE, "finetune_epochs": 18,
                       "finetune_learning_rate": 2e-3, "weight_decay": 0.2,
                       "options": {"batchnorm_momentum": 0.9, "zero_init_residual": True}},
    "fusion": {**BACKBONE_SCHEDULE, "finetune_epochs": 8, "finetune_learning_rate": 6e-4,
               "options": {"dense_cut": "conv5_block16_concat",
                           "efficient_cut": "block7b_add",
                           "proj_channels": 256, "batchnorm_momentum": 0.9}},
}
