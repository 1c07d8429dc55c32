"""Augmentation for the trainer: MoCo v2's two views as batched tensor ops (:mod:`.views`,
built on :mod:`.crop` and :mod:`.color`), and the per-image torchvision pipelines
(:mod:`.transforms`) for data that is not resident."""
