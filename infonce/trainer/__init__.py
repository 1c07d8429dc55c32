"""The Lightning trainer: ``python train.py fit --config configs/<recipe>.yaml``.

Built on the library (``infonce``), never the other way round: the methods
(:mod:`~infonce.trainer.moco`, :mod:`~infonce.trainer.simclr`, :mod:`~infonce.trainer.moco_v3`,
:mod:`~infonce.trainer.supcon`, one LightningModule each over :mod:`~infonce.trainer.base`),
:mod:`~infonce.trainer.linear_probe`, the backbones, the
LightningCLI (:mod:`~infonce.trainer.cli`), run checkpoints and exact resume
(:mod:`~infonce.trainer.checkpoint`, :mod:`~infonce.trainer.resume`, :mod:`~infonce.trainer.rng`),
backbone export (``python -m infonce.trainer.export``), and the data side in
:mod:`infonce.trainer.data` and :mod:`infonce.trainer.augment`.
"""
