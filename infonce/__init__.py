"""infonce: contrastive learning with temperature-scaled softmax losses."""

from infonce.chunked import InfoNCEStats, chunked_info_nce
from infonce.info_nce import InfoNCE, info_nce, info_nce_logits, info_nce_stats, separated_loss
from infonce.memory_queue import MemoryQueue
from infonce.momentum import cosine_momentum, momentum_update
from infonce.softmax import softmax_with_temperature

__all__ = [
    "InfoNCE",
    "InfoNCEStats",
    "MemoryQueue",
    "chunked_info_nce",
    "cosine_momentum",
    "info_nce",
    "info_nce_logits",
    "info_nce_stats",
    "load_backbone",
    "momentum_update",
    "separated_loss",
    "softmax_with_temperature",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # load_backbone needs torchvision's models: imported when first asked for, not with infonce
    if name == "load_backbone":
        from infonce.export import load_backbone

        return load_backbone
    raise AttributeError(f"module 'infonce' has no attribute {name!r}")
