"""Augmentation for the trainer: every recipe said once (:mod:`.recipes`, one ``ViewSpec`` per
view), drawn either as batched tensor ops on whatever device the batch lives on (:mod:`.views`,
built on :mod:`.crop`, :mod:`.color` and :mod:`.filters`) or as per-image torchvision pipelines
(:mod:`.transforms`) for data that is not resident; each dataset's normalisation once
(:mod:`.normalization`)."""
