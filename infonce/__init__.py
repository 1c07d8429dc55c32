"""infonce: contrastive learning with temperature-scaled softmax losses."""

from infonce.calibration import TemperatureScaler, expected_calibration_error
from infonce.chunked import InfoNCEStats, chunked_info_nce
from infonce.contrastive import nt_xent, supcon
from infonce.diagnostics import (
    alignment,
    contrastive_entropy,
    embedding_diagnostics,
    hardest_negative_similarity,
    uniformity,
)
from infonce.distillation import distillation_loss
from infonce.generation import sample_with_temperature
from infonce.info_nce import InfoNCE, info_nce, info_nce_logits, info_nce_stats, separated_loss
from infonce.memory_queue import MemoryQueue
from infonce.momentum import cosine_momentum, momentum_update
from infonce.softmax import softmax_with_temperature
from infonce.temperature import LearnableTemperature

__all__ = [
    "InfoNCE",
    "InfoNCEStats",
    "LearnableTemperature",
    "MemoryQueue",
    "TemperatureScaler",
    "alignment",
    "chunked_info_nce",
    "contrastive_entropy",
    "cosine_momentum",
    "distillation_loss",
    "embedding_diagnostics",
    "expected_calibration_error",
    "hardest_negative_similarity",
    "info_nce",
    "info_nce_logits",
    "info_nce_stats",
    "load_backbone",
    "momentum_update",
    "nt_xent",
    "sample_with_temperature",
    "separated_loss",
    "softmax_with_temperature",
    "supcon",
    "uniformity",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # load_backbone needs torchvision's models: imported when first asked for, not with infonce
    if name == "load_backbone":
        from infonce.trainer.export import load_backbone

        return load_backbone
    raise AttributeError(f"module 'infonce' has no attribute {name!r}")
