from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torch import nn
from torch.utils.data import DistributedSampler

import infonce.trainer.data.datamodule
from infonce.trainer.augment.normalization import DATASET_STATS
from infonce.trainer.augment.recipes import RECIPES
from infonce.trainer.augment.transforms import views_transform
from infonce.trainer.augment.views import BatchViews, augment_view, sample_view_params
from infonce.trainer.data.datamodule import ImageDataModule
from infonce.trainer.data.samplers import (
    ResumableSampler,
    SeededTransformDataset,
    ShardSampler,
    sample_seed,
)
from infonce.trainer.data.sources import (
    build_dataset,
    channel_mean_std,
    subset_indices,
)
from infonce.trainer.rng import splitmix64

FOLDER_STATS = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
CIFAR10_MEAN, CIFAR10_STD = DATASET_STATS["cifar10"]
TWO_VIEW_RECIPES = [name for name, views in RECIPES.items() if len(views) == 2]


def _folder_module(root, **kwargs) -> ImageDataModule:
    """The tiny folder, batches of 4, through the PIL loader path unless ``resident=True``."""
    args = {"dataset": "folder", "root": str(root), "batch_size": 4, "num_workers": 0}
    return ImageDataModule(**(args | FOLDER_STATS | {"resident": False} | kwargs))


BOTH_PATHS = pytest.mark.parametrize("resident", [False, True], ids=["loader", "resident"])


def _epoch_batches(module: ImageDataModule, epoch: int) -> list:
    loader = module.train_dataloader()
    module.train_sampler.set_epoch(epoch)
    return list(loader)


def _assert_same_batches(batches, others):
    assert len(batches) == len(others)
    for ((x1, x2), y), ((o1, o2), oy) in zip(batches, others, strict=True):
        assert torch.equal(x1, o1) and torch.equal(x2, o2) and torch.equal(y, oy)


# sample_seed and ResumableSampler


def test_sample_seed_is_a_fixed_63_bit_hash_of_seed_epoch_and_index():
    assert splitmix64(0) == 0xE220A8397B1DCDAF  # the reference splitmix64's first output
    assert sample_seed(0, 0, 0) == 0x11C13ADE1C7E5F48  # pinned: changing it breaks resumes
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 3 * 3 * 50
    assert all(0 <= x < 2**63 for x in seeds)


@pytest.mark.parametrize(("num_items", "replicas"), [(10, 1), (10, 3), (11, 2), (2, 3)])
@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_order_is_distributed_samplers_order_for_every_rank(
    num_items, replicas, drop_last, shuffle
):
    for rank in range(replicas):
        ours = ResumableSampler(num_items, 7, replicas, rank, shuffle, drop_last)
        theirs = DistributedSampler(range(num_items), replicas, rank, shuffle, 7, drop_last)
        for epoch in (0, 3):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert [i for i, _ in ours] == list(theirs)
            assert len(ours) == len(theirs)


@pytest.mark.parametrize(("num_items", "replicas", "batch"), [(24, 2, 4), (50, 3, 4), (7, 1, 3)])
def test_blocked_ranks_side_by_side_are_the_batches_of_one_process(num_items, replicas, batch):
    """The R per-rank batches of each step, concatenated, are the batch of R x B that one
    process draws: same images, same order; the tail short of a global batch is dropped."""
    one = ResumableSampler(num_items, 5, batch_size=replicas * batch)
    ranks = [ResumableSampler(num_items, 5, replicas, r, batch_size=batch) for r in range(replicas)]
    for sampler in (one, *ranks):
        sampler.set_epoch(2)
    single = list(one)
    per_rank = [list(sampler) for sampler in ranks]
    assert len(one) == len(single) == num_items // (replicas * batch) * replicas * batch
    steps = len(single) // (replicas * batch)
    for sampler, items in zip(ranks, per_rank, strict=True):
        assert len(sampler) == len(items) == steps * batch
    for step in range(steps):
        side_by_side = [x for items in per_rank for x in items[step * batch : (step + 1) * batch]]
        assert side_by_side == single[step * replicas * batch : (step + 1) * replicas * batch]


def test_blocked_ranks_need_drop_last():
    with pytest.raises(ValueError, match="needs drop_last=True"):
        ResumableSampler(10, 0, 2, 0, drop_last=False, batch_size=2)


@pytest.mark.parametrize(("num_items", "replicas"), [(35, 2), (5, 3), (2, 3), (0, 2)])
def test_shard_sampler_deals_every_item_once_without_padding(num_items, replicas):
    shards = [list(ShardSampler(num_items, replicas, r)) for r in range(replicas)]
    assert sorted(i for shard in shards for i in shard) == list(range(num_items))
    assert [len(ShardSampler(num_items, replicas, r)) for r in range(replicas)] == list(
        map(len, shards)
    )
    assert isinstance(ShardSampler(num_items, replicas, 0), DistributedSampler)


def test_epoch_source_decides_the_epoch_of_each_iteration_over_set_epoch():
    """Lightning may call set_epoch with epoch + 1 after some resumes; the trainer's
    current_epoch, read when an iteration starts, is what counts."""
    current = {"epoch": 2}
    sampler = ResumableSampler(10, seed=0, epoch_source=lambda: current["epoch"])
    sampler.set_epoch(7)
    assert [i for i, _ in sampler] == sampler.epoch_indices(2) and sampler.epoch == 2
    current["epoch"] = 3
    assert [i for i, _ in sampler] == sampler.epoch_indices(3)


def test_set_start_pins_the_epoch_and_position_of_the_next_iteration_only():
    sampler = ResumableSampler(10, seed=0, epoch_source=lambda: 9)
    sampler.set_start(4, epoch=1)
    sampler.set_epoch(2)  # what Lightning does before the first batch: the pin wins
    assert [i for i, _ in sampler] == sampler.epoch_indices(1)[4:]
    assert [i for i, _ in sampler] == sampler.epoch_indices(9)  # then the source again


def test_sampler_yields_each_index_with_its_sample_seed():
    sampler = ResumableSampler(12, seed=5)
    sampler.set_epoch(2)
    pairs = list(sampler)
    assert sorted(i for i, _ in pairs) == list(range(12))
    assert all(s == sample_seed(5, 2, i) for i, s in pairs)


def test_different_epochs_give_different_orders_and_seeds():
    sampler = ResumableSampler(50, seed=0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert [i for i, _ in epoch0] != [i for i, _ in epoch1]
    assert dict(epoch0)[7] != dict(epoch1)[7]


def test_set_start_yields_the_tail_of_the_order_once_then_full_epochs():
    sampler = ResumableSampler(20, seed=1, num_replicas=2, rank=1)
    sampler.set_epoch(4)
    full = list(sampler)
    sampler.set_start(6)
    assert len(sampler) == 10  # still the full per-rank epoch, for Lightning
    assert list(sampler) == full[6:]
    assert list(sampler) == full
    sampler.set_start(10)
    assert list(sampler) == []


@pytest.mark.parametrize("start", [-1, 11])
def test_set_start_rejects_values_outside_the_epoch(start):
    with pytest.raises(ValueError, match=rf"start must be in \[0, 10\], got {start}"):
        ResumableSampler(20, seed=1, num_replicas=2).set_start(start)


def test_two_ranks_are_disjoint_and_cover_the_epoch_order():
    rank0, rank1 = (ResumableSampler(11, 3, num_replicas=2, rank=r) for r in (0, 1))
    order = torch.randperm(11, generator=torch.Generator().manual_seed(3)).tolist()
    indices0, indices1 = [i for i, _ in rank0], [i for i, _ in rank1]
    assert not set(indices0) & set(indices1)
    assert indices0 == order[0:10:2] and indices1 == order[1:10:2]  # last item dropped


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_items": 0}, "num_items must be an integer >= 1, got 0"),
        ({"num_replicas": 0}, "num_replicas must be >= 1, got 0"),
        ({"rank": 2, "num_replicas": 2}, r"rank must be in \[0, 2\), got 2"),
    ],
)
def test_sampler_rejects_bad_arguments_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResumableSampler(**({"num_items": 10, "seed": 0} | kwargs))


# SeededTransformDataset


def test_seeded_item_is_a_pure_function_of_its_key_and_leaves_the_global_rng(tiny_folder):
    base = build_dataset("folder", str(tiny_folder), train=True, download=False)
    data = SeededTransformDataset(base, views_transform(RECIPES["moco_v2"], 32, **FOLDER_STATS))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    (a1, a2), label = data[(5, 99)]
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(10)  # move the global RNG: must not matter
    (b1, b2), _ = data[(5, 99)]
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and not torch.equal(a1, a2)
    assert label == 0
    (c1, _), _ = data[(5, 100)]
    assert not torch.equal(a1, c1)


def test_seeded_dataset_indices_select_base_items(tiny_folder):
    base = build_dataset("folder", str(tiny_folder), train=True, download=False)
    data = SeededTransformDataset(base, lambda image: image.size, indices=[20, 3])
    assert len(data) == 2
    assert data[0] == ((32, 32), 2) and data[(1, 0)] == ((32, 32), 0)
    with pytest.raises(IndexError, match="index 2 out of range for 2 items"):
        data[2]


# ImageDataModule


@BOTH_PATHS
def test_moco_v2_train_batches_are_two_float_views_and_int_labels(tiny_folder, resident):
    module = _folder_module(tiny_folder, resident=resident)
    batches = _epoch_batches(module, 0)
    assert len(batches) == 6 == len(module.train_dataloader())
    (x1, x2), y = batches[0]
    assert x1.shape == x2.shape == (4, 3, 32, 32) and x1.dtype == x2.dtype == torch.float32
    assert y.shape == (4,) and y.dtype == torch.int64
    assert not torch.equal(x1, x2)
    assert isinstance(module.train_sampler, DistributedSampler)  # Lightning won't re-wrap it


@BOTH_PATHS
def test_crop_flip_train_batches_are_one_view(tiny_folder, resident):
    module = _folder_module(tiny_folder, resident=resident, augmentation="crop_flip")
    assert module.views_per_image == 1
    x, y = next(iter(module.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.shape == (4,)
    with pytest.raises(ValueError, match="fixed_views needs a recipe of two or more views"):
        module.fixed_views(4)


@BOTH_PATHS
@pytest.mark.parametrize("augmentation", TWO_VIEW_RECIPES)
def test_every_two_view_recipe_gives_two_view_batches_and_fixed_views(
    tiny_folder, resident, augmentation
):
    module = _folder_module(tiny_folder, resident=resident, augmentation=augmentation)
    assert module.views_per_image == 2 and module.views == RECIPES[augmentation]
    (x1, x2), y = next(iter(module.train_dataloader()))
    assert x1.shape == x2.shape == (4, 3, 32, 32) and y.shape == (4,)
    assert not torch.equal(x1, x2)
    fixed = module.fixed_views(5)
    assert len(fixed) == 2 and fixed[0].shape == fixed[1].shape == (5, 3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(fixed, module.fixed_views(5), strict=True))


def test_fixed_views_come_from_every_class_of_a_class_sorted_folder(tiny_folder):
    module = _folder_module(tiny_folder)
    labels = [module._base(True)[i][1] for i in range(len(module._base(True)))]
    assert labels == sorted(labels)  # an ImageFolder lists its images class by class
    picks = module.fixed_indices(len(set(labels)))
    assert {labels[i] for i in picks} == set(labels)  # not the first class's images only
    assert module.fixed_indices(10**6) == list(range(len(labels)))  # all of a small split


def test_crop_scale_is_the_recipes_unless_given_for_every_view(tiny_folder):
    assert _folder_module(tiny_folder).views[0].scale == (0.2, 1.0)  # moco_v2's
    assert _folder_module(tiny_folder, augmentation="simclr").views[1].scale == (0.08, 1.0)
    module = _folder_module(tiny_folder, augmentation="solo_asymmetric", crop_scale=(0.3, 0.9))
    assert [view.scale for view in module.views] == [(0.3, 0.9)] * 2
    assert [view.solarize_p for view in module.views] == [0.0, 0.2]  # the rest is the recipe's
    loader = module._train_transform()  # the PIL path: one Compose per view
    assert [view.transforms[0].scale for view in loader.transforms] == [(0.3, 0.9)] * 2
    args = {"augmentation": "solo_asymmetric", "crop_scale": (0.3, 0.9), "resident": True}
    views = _folder_module(tiny_folder, **args)._train_transform()
    assert isinstance(views, BatchViews) and views.views == module.views


def test_the_loader_and_resident_crop_flip_are_one_transform(tiny_folder):
    """crop_flip through PIL per sample (loader) and as batched tensor ops (resident): the same
    crop distribution, flip rate and normalisation, no colour op, and for the same crop box and
    flip the same pixels to within one uint8 level (PIL resizes in fixed point, in uint8)."""
    loader = _folder_module(tiny_folder, augmentation="crop_flip")._train_transform()
    views = _folder_module(tiny_folder, augmentation="crop_flip", resident=True)._train_transform()
    views = views.__self__  # the BatchViews whose .view the resident path calls
    (spec,) = views.views
    crop, flip, to_tensor, normalize = loader.transforms
    assert (type(crop), type(flip), type(to_tensor)) == (
        T.RandomResizedCrop,
        T.RandomHorizontalFlip,
        T.ToTensor,
    )
    assert tuple(crop.scale) == spec.scale and tuple(crop.ratio) == pytest.approx(spec.ratio)
    assert tuple(crop.size) == (views.size, views.size)
    assert flip.p == spec.flip_p and spec.jitter_p == 0 and spec.grayscale_p == 0
    assert tuple(normalize.mean) == tuple(views.mean.flatten().tolist())
    assert tuple(normalize.std) == tuple(views.std.flatten().tolist())

    base = build_dataset("folder", str(tiny_folder), train=True, download=False)
    images = torch.stack([TF.pil_to_tensor(base[i][0]) for i in range(len(base))])  # uint8
    B, _, H, W = images.shape
    params = sample_view_params(B, H, W, spec, torch.Generator().manual_seed(3))
    ours = augment_view(images, params, spec, views.size).sub_(views.mean).div_(views.std)
    assert params.flip.any() and not params.flip.all()
    for b in range(B):
        top, left, height, width = params.boxes[b].tolist()
        pil = TF.resized_crop(base[b][0], top, left, height, width, [views.size, views.size])
        pil = TF.hflip(pil) if params.flip[b] else pil
        theirs = normalize(to_tensor(pil))
        tolerance = 1.0 / 255 / min(normalize.std) + 1e-5  # one uint8 level
        torch.testing.assert_close(ours[b], theirs, rtol=0, atol=tolerance)


def test_a_channel_without_variation_is_refused_naming_the_options(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2):  # the blue channel is 0 everywhere
                pixels = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8)
                pixels[..., 2] = 0
                Image.fromarray(pixels.numpy()).save(tmp_path / split / name / f"{i}.png")
    module = ImageDataModule(dataset="folder", root=str(tmp_path), cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"without variation .* --data.mean and --data.std"):
        module.setup("fit")


def test_resident_is_the_default_up_to_64_pixels(tiny_folder):
    args = {"dataset": "folder", "root": str(tiny_folder)}
    assert ImageDataModule(**args).resident
    assert ImageDataModule(**args, image_size=64).resident
    assert not ImageDataModule(**args, image_size=96).resident
    assert not ImageDataModule(**args, resident=False).resident


def test_resident_eval_batches_equal_the_loader_paths(tiny_folder, tmp_path):
    loader = _folder_module(tiny_folder, eval_batch_size=7).val_dataloader()
    resident = _folder_module(
        tiny_folder, eval_batch_size=7, resident=True, cache_dir=str(tmp_path)
    ).val_dataloader()
    batches = list(zip(loader, resident, strict=True))
    assert len(batches) == 6  # 24 train images (the memory), then 12 test, by 7
    for (x, y, q), (rx, ry, rq) in batches:
        torch.testing.assert_close(rx, x, rtol=0, atol=1e-6)
        assert torch.equal(ry, y) and torch.equal(rq, q)


def test_resident_batches_are_a_function_of_seed_epoch_and_position(tiny_folder, tmp_path):
    first = _epoch_batches(_folder_module(tiny_folder, resident=True, cache_dir=str(tmp_path)), 1)
    again = _epoch_batches(_folder_module(tiny_folder, resident=True, cache_dir=str(tmp_path)), 1)
    _assert_same_batches(first, again)
    other = _epoch_batches(_folder_module(tiny_folder, resident=True, cache_dir=str(tmp_path)), 2)
    assert not torch.equal(first[0][0][0], other[0][0][0])
    other_seed = _folder_module(tiny_folder, resident=True, cache_dir=str(tmp_path), seed=5)
    assert not torch.equal(first[0][0][0], _epoch_batches(other_seed, 1)[0][0][0])


def test_train_batches_are_identical_with_zero_and_two_workers(tiny_folder):
    serial = _epoch_batches(_folder_module(tiny_folder, num_workers=0), epoch=1)
    parallel = _epoch_batches(_folder_module(tiny_folder, num_workers=2), epoch=1)
    _assert_same_batches(serial, parallel)


def test_next_epoch_gives_a_different_order_and_different_views(tiny_folder):
    module = _folder_module(tiny_folder)
    epoch0, epoch1 = _epoch_batches(module, 0), _epoch_batches(module, 1)
    labels0 = torch.cat([y for _, y in epoch0])
    labels1 = torch.cat([y for _, y in epoch1])
    assert not torch.equal(labels0, labels1)
    data = module.train_dataloader().dataset
    (view0, _), _ = data[(3, sample_seed(0, 0, 3))]
    (view1, _), _ = data[(3, sample_seed(0, 1, 3))]
    assert not torch.equal(view0, view1)


@BOTH_PATHS
def test_resume_mid_epoch_yields_the_remaining_batches_then_full_epochs(tiny_folder, resident):
    full = _epoch_batches(_folder_module(tiny_folder, resident=resident), epoch=2)
    next_epoch = _epoch_batches(_folder_module(tiny_folder, resident=resident), epoch=3)
    resumed = _folder_module(tiny_folder, resident=resident)
    # a checkpoint written after two batches of 4 of epoch 2
    resumed.load_state_dict(
        {"epoch": 2, "batches_done": 2, "batches_per_epoch": 6, "batch_size": 4, "world_size": 1}
    )
    loader = resumed.train_dataloader()
    assert resumed.train_sampler.epoch == 2  # set before Lightning's own set_epoch
    assert len(loader) == 6
    _assert_same_batches(list(loader), full[2:])
    resumed.train_sampler.set_epoch(3)
    _assert_same_batches(list(loader), next_epoch)


@BOTH_PATHS
def test_checkpoint_at_the_end_of_an_epoch_resumes_at_the_next_epoch(tiny_folder, resident):
    module = _folder_module(tiny_folder, resident=resident)
    module.load_state_dict(
        {"epoch": 2, "batches_done": 6, "batches_per_epoch": 6, "batch_size": 4, "world_size": 1}
    )
    loader = module.train_dataloader()
    assert module.train_sampler.epoch == 3
    _assert_same_batches(
        list(loader), _epoch_batches(_folder_module(tiny_folder, resident=resident), epoch=3)
    )


def test_resume_past_the_end_of_an_epoch_of_a_larger_batch_starts_at_its_end(tiny_folder):
    module = _folder_module(tiny_folder, batch_size=20)  # one batch of 20 an epoch
    with pytest.warns(UserWarning, match="batch_size=20 .saved: 4."):
        module.load_state_dict(
            {"epoch": 0, "batches_done": 5, "batches_per_epoch": 6, "batch_size": 4,
             "world_size": 1}
        )  # fmt: skip
    assert list(module.train_dataloader()) == []  # 20 done >= 20: nothing left of epoch 0


def test_resume_with_another_batch_size_warns_that_the_order_is_not_exact(tiny_folder):
    module = _folder_module(tiny_folder)
    with pytest.warns(UserWarning, match="not reproduced exactly"):
        module.load_state_dict(
            {
                "epoch": 0,
                "batches_done": 1,
                "batches_per_epoch": 3,
                "batch_size": 8,
                "world_size": 1,
            }
        )
    module.train_dataloader()
    assert module.train_sampler.epoch == 0


@BOTH_PATHS
def test_train_dataloader_shards_by_the_trainers_world_size_and_rank(tiny_folder, resident):
    module = _folder_module(tiny_folder, resident=resident)
    strategy = SimpleNamespace(root_device=torch.device("cpu"))
    module.trainer = SimpleNamespace(
        world_size=2, global_rank=1, current_epoch=0, strategy=strategy
    )
    loader = module.train_dataloader()
    assert (module.train_sampler.num_replicas, module.train_sampler.rank) == (2, 1)
    assert len(loader) == 3  # 12 of 24 images, batches of 4


def test_limit_train_images_is_a_seeded_subset_used_for_training_and_memory(tiny_folder):
    module = _folder_module(tiny_folder, limit_train_images=5, seed=3)
    train = module.train_dataloader().dataset
    both = module.val_dataloader().dataset
    assert train.indices == both.memory.indices == subset_indices(24, 5, seed=3)
    again = _folder_module(tiny_folder, limit_train_images=5, seed=3).train_dataloader()
    other_seed = _folder_module(tiny_folder, limit_train_images=5, seed=4).train_dataloader()
    assert again.dataset.indices == train.indices != other_seed.dataset.indices
    assert len(both.queries) == 12 and len(both) == 17


@BOTH_PATHS
def test_val_dataloader_is_memory_then_test_in_one_loader_or_test_only(tiny_folder, resident):
    loader = _folder_module(tiny_folder, resident=resident, eval_batch_size=5).val_dataloader()
    batches = list(loader)
    x, y, is_query = (torch.cat(parts) for parts in zip(*batches, strict=True))
    assert x.shape == (36, 3, 32, 32) and x.dtype == torch.float32
    assert is_query.dtype == torch.bool and torch.equal(is_query, torch.arange(36) >= 24)
    assert torch.equal(y[:24], torch.arange(3).repeat_interleave(8))  # the train split
    assert torch.equal(y[24:], torch.arange(3).repeat_interleave(4))  # the test split
    assert is_query[:25].tolist() == [False] * 24 + [True]  # batch 5 mixes the splits
    only = _folder_module(tiny_folder, resident=resident, knn_memory=False).val_dataloader()
    assert len(only.dataset) == 12 and len(next(iter(only))) == 2


def test_memory_then_queries_keeps_the_order_of_any_keys(tiny_folder, tmp_path):
    both = _folder_module(tiny_folder, resident=True, cache_dir=str(tmp_path))
    data = both.val_dataloader().dataset
    keys = [30, 2, 25, 7]  # as a DistributedSampler's stride would interleave them
    x, y, is_query = data.__getitems__(keys)
    assert is_query.tolist() == [True, False, True, False]
    for row, key in enumerate(keys):
        ex, ey, eq = data.__getitems__([key])
        assert torch.equal(x[row], ex[0]) and y[row] == ey[0] and bool(eq[0]) == is_query[row]


def test_cifar10_module_normalizes_with_the_cifar10_constants(cifar10_pickle_root, skip_cifar_md5):
    module = ImageDataModule(root=str(cifar10_pickle_root), num_workers=0, eval_batch_size=20)
    assert (module.mean, module.std) == (CIFAR10_MEAN, CIFAR10_STD)
    module.setup("test")
    x, _ = next(iter(module.test_dataloader()))
    raw = torch.from_numpy(module._base(train=False).data).permute(0, 3, 1, 2) / 255
    mean, std = torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD)
    torch.testing.assert_close(x, (raw - mean[:, None, None]) / std[:, None, None])
    assert module.num_classes == 10


def test_folder_mean_and_std_are_estimated_at_setup(tiny_folder):
    module = _folder_module(tiny_folder, mean=None, std=None)
    assert module.mean is None and module.num_classes == 3
    module.setup("fit")
    base = build_dataset("folder", str(tiny_folder), train=True, download=False)
    assert (module.mean, module.std) == channel_mean_std(base, None, 32)  # 24 < 2,000: all
    # noise in [0, 100) plus 155 on one channel in a third of the images: (49.5 + 155/3) / 255
    torch.testing.assert_close(
        torch.tensor(module.mean), torch.full((3,), 0.397), atol=0.01, rtol=0
    )
    batch = torch.cat([x[~is_query] for x, _, is_query in module.val_dataloader()])  # memory
    torch.testing.assert_close(batch.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "imagenet"}, "dataset must be one of .* got 'imagenet'"),
        (
            {"augmentation": "simclr_v2"},
            r"augmentation must be one of \('moco_v2', .*'crop_flip'\), got 'simclr_v2'",
        ),
        ({"crop_scale": (0.9, 0.2)}, r"crop_scale must be \(low, high\) with 0 < low <= high <= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"eval_batch_size": 0}, "eval_batch_size must be an integer >= 1, got 0"),
        ({"num_workers": -1}, "num_workers must be an integer >= 0, got -1"),
        ({"image_size": 0}, "image_size must be an integer >= 1, got 0"),
        ({"limit_train_images": 0}, "limit_train_images must be None or an integer >= 1, got 0"),
        ({"limit_test_images": -2}, "limit_test_images must be None or an integer >= 1, got -2"),
        ({"mean": (0.5, 0.5)}, r"mean must be 3 finite numbers \(R, G, B\), got \(0.5, 0.5\)"),
        ({"mean": (0.5, float("nan"), 0.5)}, r"mean must be 3 finite numbers"),
        ({"std": (0.2, 0.2, 0.0)}, r"std must be 3 finite numbers > 0 .* got \(0.2, 0.2, 0.0\)"),
        ({"bad_images": "ignore"}, r"bad_images must be one of \('error', 'skip'\), got 'ignore'"),
    ],
)
def test_datamodule_rejects_bad_arguments_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageDataModule(**kwargs)


class _RecordingModel(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 1)
        self.seen: list[tuple[int, int]] = []  # (trainer epoch, sampler epoch) per batch

    def training_step(self, batch, batch_idx):
        (x1, x2), y = batch
        self.seen.append((self.current_epoch, self.trainer.datamodule.train_sampler.epoch))
        return self.layer(x1.mean(dim=(2, 3))).sum() + 0 * x2.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_sets_the_sampler_epoch_each_epoch(tiny_folder):
    model = _RecordingModel()
    module = _folder_module(tiny_folder, knn_memory=False)
    trainer = L.Trainer(
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    with pytest.warns(UserWarning, match="no `validation_step`"):
        trainer.fit(model, datamodule=module)
    assert model.seen == [(0, 0)] * 6 + [(1, 1)] * 6


def test_prepare_data_downloads_once_and_setup_only_reads(tiny_folder, monkeypatch, tmp_path):
    calls = []
    original = infonce.trainer.data.datamodule.build_dataset

    def spy(dataset, root, train, download):
        calls.append((train, download))
        return original(dataset, root, train, download)

    monkeypatch.setattr(infonce.trainer.data.datamodule, "build_dataset", spy)
    module = _folder_module(tiny_folder, download=True, resident=True, cache_dir=str(tmp_path))
    module.prepare_data()  # Lightning: once per node, before every rank's setup
    assert calls == [(True, True), (False, True)]
    assert len(list(tmp_path.glob("*.pt"))) == 2  # both splits decoded into the cache
    calls.clear()
    module.setup("fit")
    module.train_dataloader(), module.val_dataloader()
    assert calls and all(download is False for _, download in calls)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # read from the cache, nothing decoded again
