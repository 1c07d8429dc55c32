"""infonce: contrastive learning with temperature-scaled softmax losses.

Every public function and class of the library modules is exported here: ``infonce.__all__``
is the union of their ``__all__`` lists, plus ``load_backbone`` (from the trainer, imported
only when first asked for).
"""

from infonce.calibration import TemperatureScaler, expected_calibration_error, reliability_bins
from infonce.chunked import InfoNCEStats, chunked_info_nce, chunked_info_nce_stats
from infonce.clip import clip_loss
from infonce.contrastive import nt_xent, supcon
from infonce.diagnostics import (
    alignment,
    contrastive_entropy,
    embedding_diagnostics,
    hardest_negative_similarity,
    temperature_gradient,
    uniformity,
)
from infonce.distillation import distillation_loss
from infonce.distributed import (
    gather_rows,
    gather_with_grad,
    rank_and_world_size,
    single_process_gather,
)
from infonce.generation import sample_with_temperature
from infonce.info_nce import InfoNCE, info_nce, info_nce_logits, info_nce_stats, separated_loss
from infonce.knn import knn_accuracy, knn_neighbours, knn_predict, sharded_knn_accuracy
from infonce.memory_queue import MemoryQueue
from infonce.momentum import cosine_momentum, momentum_update
from infonce.shuffle_bn import encode_shuffled, encode_shuffled_across_ranks, key_permutation
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
    "chunked_info_nce_stats",
    "clip_loss",
    "contrastive_entropy",
    "cosine_momentum",
    "distillation_loss",
    "embedding_diagnostics",
    "encode_shuffled",
    "encode_shuffled_across_ranks",
    "expected_calibration_error",
    "gather_rows",
    "gather_with_grad",
    "hardest_negative_similarity",
    "info_nce",
    "info_nce_logits",
    "info_nce_stats",
    "key_permutation",
    "knn_accuracy",
    "knn_neighbours",
    "knn_predict",
    "load_backbone",
    "momentum_update",
    "nt_xent",
    "rank_and_world_size",
    "reliability_bins",
    "sample_with_temperature",
    "separated_loss",
    "sharded_knn_accuracy",
    "single_process_gather",
    "softmax_with_temperature",
    "supcon",
    "temperature_gradient",
    "uniformity",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # load_backbone needs torchvision's models: imported when first asked for, not with infonce
    if name == "load_backbone":
        try:
            from infonce.trainer.export import load_backbone
        except ImportError as err:  # a torch-only install
            raise ImportError(
                f"infonce.load_backbone needs the trainer's packages ({err}): "
                'pip install "infonce[trainer]"'
            ) from err
        return load_backbone
    raise AttributeError(f"module 'infonce' has no attribute {name!r}")
