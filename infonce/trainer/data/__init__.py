"""Data for the trainer: the LightningDataModule (:mod:`.datamodule`), the image sources it
reads (:mod:`.sources`: CIFAR, image folders), data kept resident as one uint8 tensor
(:mod:`.resident`) and the resumable, rank-aware samplers (:mod:`.samplers`)."""
