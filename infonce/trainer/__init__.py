"""The Lightning trainer: ``python train.py fit --config configs/<recipe>.yaml``.

Built on the library (``infonce``), never the other way round: :mod:`~infonce.trainer.moco`
(the MoCo LightningModule), :mod:`~infonce.trainer.linear_probe`, the backbones, the
LightningCLI (:mod:`~infonce.trainer.cli`), run checkpoints and exact resume
(:mod:`~infonce.trainer.checkpoint`, :mod:`~infonce.trainer.resume`, :mod:`~infonce.trainer.rng`),
backbone export (``python -m infonce.trainer.export``), and the data side in
:mod:`infonce.trainer.data` and :mod:`infonce.trainer.augment`.
"""
