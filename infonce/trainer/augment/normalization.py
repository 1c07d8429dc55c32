"""Per-channel normalisation statistics: each dataset's, said once, and one rule for every
place that takes a mean and std."""

import math
from collections.abc import Sequence
from numbers import Real

from torch import Tensor

__all__ = ["DATASET_STATS", "MOCO_CIFAR10_DEMO_STATS", "check_channel_stats"]

Stats = tuple[float, float, float]

# (mean, std) per channel (R, G, B) of images scaled to [0, 1], by dataset name.
DATASET_STATS: dict[str, tuple[Stats, Stats]] = {
    # over every pixel of the train split; solo-learn's MEANS_N_STD
    # (solo/data/pretrain_dataloader.py) has the same values
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # torchvision's ImageNet statistics: lightly's IMAGENET_NORMALIZE, MoCo's main_moco.py,
    # and the normalisation of lightly's CIFAR-10 benchmark
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# The MoCo CIFAR-10 demo (facebookresearch/moco, colab/moco_cifar10_demo.ipynb) normalises
# with this std, which is not CIFAR-10's pixel std (DATASET_STATS["cifar10"]) but a value
# widely copied in CIFAR training code; kept apart, for runs that reproduce the demo setting
# by setting.
MOCO_CIFAR10_DEMO_STATS: tuple[Stats, Stats] = (
    (0.4914, 0.4822, 0.4465),
    (0.2023, 0.1994, 0.2010),
)


def check_channel_stats(name: str, value: Sequence[float] | Tensor, positive: bool) -> Stats:
    """``value`` as three floats (R, G, B): finite numbers, and > 0 with ``positive`` (a std).

    Raises:
        ValueError: anything else (not 3 values, a bool, a string, NaN, inf, a std <= 0), with
            ``name`` and the value.
    """
    ok = isinstance(value, tuple | list) or (isinstance(value, Tensor) and value.dim() == 1)
    ok = ok and len(value) == 3
    ok = ok and all(isinstance(v, Real | Tensor) and not isinstance(v, bool) for v in value)
    ok = ok and all(math.isfinite(float(v)) and (not positive or float(v) > 0) for v in value)
    if not ok:
        what = "3 finite numbers > 0" if positive else "3 finite numbers"
        raise ValueError(f"{name} must be {what} (R, G, B), got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))
