"""Train MoCo, or a linear probe, with LightningCLI.

python train.py fit --config configs/cpu_quick.yaml --data.dataset folder --data.root DIR
python train.py validate --config configs/cpu_quick.yaml --ckpt_path last
python train.py fit --config configs/linear_probe.yaml --model.pretrained CKPT
python train.py fit --print_config --config configs/moco_cifar10.yaml
"""

import sys

from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningCLI

from infonce.data import ImageDataModule
from infonce.datasets import DatasetNotFoundError


def main(args=None) -> None:
    try:
        LightningCLI(LightningModule, ImageDataModule, subclass_mode_model=True, args=args)
    except DatasetNotFoundError as err:  # a message for people, not a traceback
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
