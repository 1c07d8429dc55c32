import pytest
import torch
import torch.nn.functional as F
from torch import nn

from infonce.trainer.backbones import ConvNet, SplitBatchNorm, build_backbone


def _randomise_affine(bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)


def _loop_reference(bn: nn.BatchNorm2d, x: torch.Tensor, s: int):
    """Per-chunk F.batch_norm in float64, with one copy of the running stats per chunk."""
    outs, means, variances = [], [], []
    for chunk in x.double().chunk(s):
        mean = bn.running_mean.double().clone()
        var = bn.running_var.double().clone()
        w, b = bn.weight.double(), bn.bias.double()
        outs.append(F.batch_norm(chunk, mean, var, w, b, True, bn.momentum, bn.eps))
        means.append(mean)
        variances.append(var)
    return torch.cat(outs), torch.stack(means).mean(0), torch.stack(variances).mean(0)


@pytest.mark.parametrize("s", [1, 2, 4, 8])
def test_split_batchnorm_matches_per_chunk_loop_in_training(s):
    torch.manual_seed(0)
    bn = SplitBatchNorm(5, num_splits=s, momentum=0.3)
    _randomise_affine(bn)
    # chunks with different means and scales, so mixing chunks up would show
    n = torch.arange(16.0).view(16, 1, 1, 1)
    x = torch.randn(16, 5, 3, 4) * (1 + n) + n
    want, want_mean, want_var = _loop_reference(bn, x, s)
    out = bn(x)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_mean.double(), want_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), want_var, rtol=1e-5, atol=1e-6)
    assert bn.num_batches_tracked.item() == 1


def test_split_batchnorm_gradients_match_per_chunk_loop():
    torch.manual_seed(1)
    s = 4
    bn = SplitBatchNorm(3, num_splits=s)
    _randomise_affine(bn)
    x = torch.randn(8, 3, 5, 5, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    w_ref = bn.weight.detach().clone().requires_grad_(True)
    b_ref = bn.bias.detach().clone().requires_grad_(True)
    upstream = torch.randn(8, 3, 5, 5)

    (bn(x) * upstream).sum().backward()
    ref = torch.cat(
        [F.batch_norm(c, None, None, w_ref, b_ref, True, 0.1, bn.eps) for c in x_ref.chunk(s)]
    )
    (ref * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.weight.grad, w_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.bias.grad, b_ref.grad, rtol=1e-4, atol=1e-5)


def test_split_batchnorm_normalises_each_chunk_to_zero_mean_unit_variance():
    bn = SplitBatchNorm(2, num_splits=2)
    x = torch.cat([torch.randn(4, 2, 6, 6), 10 + 3 * torch.randn(4, 2, 6, 6)])
    out = bn(x)
    for chunk in out.chunk(2):
        torch.testing.assert_close(chunk.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            chunk.var(dim=(0, 2, 3), unbiased=False), torch.ones(2), atol=1e-3, rtol=0
        )


def test_split_batchnorm_keeps_channels_last_with_the_values_and_gradients_of_nchw():
    torch.manual_seed(4)
    nchw, nhwc = SplitBatchNorm(6, num_splits=4), SplitBatchNorm(6, num_splits=4)
    _randomise_affine(nchw)
    nhwc.load_state_dict(nchw.state_dict())
    x = torch.randn(16, 6, 5, 7)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    x = x.requires_grad_()
    out, out_cl = nchw(x), nhwc(x_cl)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    assert not out_cl.is_contiguous()  # not silently converted back to NCHW
    torch.testing.assert_close(out_cl, out, rtol=1e-5, atol=1e-6)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    (out_cl * upstream).sum().backward()
    assert x_cl.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x_cl.grad, x.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(nhwc.weight.grad, nchw.weight.grad, rtol=1e-5, atol=1e-6)
    for name, buffer in nchw.state_dict().items():  # running statistics
        torch.testing.assert_close(nhwc.state_dict()[name], buffer, rtol=1e-6, atol=1e-7)


def test_split_batchnorm_with_one_split_is_identical_to_batchnorm2d_in_train_and_eval():
    torch.manual_seed(2)
    split, plain = SplitBatchNorm(4, num_splits=1), nn.BatchNorm2d(4)
    _randomise_affine(plain)
    split.load_state_dict(plain.state_dict())
    for _ in range(3):
        x = torch.randn(6, 4, 3, 3) * 2 + 1
        assert torch.equal(split(x), plain(x))
    for name, buffer in plain.state_dict().items():
        assert torch.equal(split.state_dict()[name], buffer), name
    split.eval()
    plain.eval()
    x = torch.randn(5, 4, 3, 3)  # odd batch: fine in eval
    assert torch.equal(split(x), plain(x))


def test_split_batchnorm_in_eval_is_batchnorm2d_with_the_same_running_stats():
    torch.manual_seed(3)
    split = SplitBatchNorm(4, num_splits=4)
    split(torch.randn(8, 4, 3, 3))  # update running stats in training
    plain = nn.BatchNorm2d(4)
    plain.load_state_dict(split.state_dict())
    split.eval()
    plain.eval()
    x = torch.randn(3, 4, 3, 3)
    assert torch.equal(split(x), plain(x))


def test_split_batchnorm_momentum_none_is_a_cumulative_average_of_split_means():
    bn = SplitBatchNorm(1, num_splits=2, momentum=None)
    batches = [torch.randn(4, 1, 2, 2) + i for i in range(3)]
    for x in batches:
        bn(x)
    want = torch.stack([c.mean() for x in batches for c in x.chunk(2)]).mean()
    torch.testing.assert_close(bn.running_mean, want.view(1), rtol=1e-5, atol=1e-6)


def test_split_batchnorm_has_the_state_dict_keys_of_batchnorm2d():
    split_keys = SplitBatchNorm(3, num_splits=8).state_dict().keys()
    assert split_keys == nn.BatchNorm2d(3).state_dict().keys()


def test_split_batchnorm_without_affine_or_running_stats_still_splits():
    bn = SplitBatchNorm(2, num_splits=2, affine=False, track_running_stats=False)
    x = torch.randn(4, 2, 3, 3)
    want = torch.cat([F.batch_norm(c, None, None, training=True) for c in x.chunk(2)])
    torch.testing.assert_close(bn(x), want)


def test_split_batchnorm_rejects_a_batch_the_splits_do_not_divide():
    bn = SplitBatchNorm(2, num_splits=4)
    with pytest.raises(ValueError, match=r"batch size 6 .*num_splits=4"):
        bn(torch.randn(6, 2, 3, 3))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_split_batchnorm_rejects_bad_num_splits(bad):
    with pytest.raises(ValueError, match="num_splits"):
        SplitBatchNorm(2, num_splits=bad)


@pytest.mark.parametrize(("name", "dim"), [("resnet18", 512), ("resnet50", 2048), ("convnet", 128)])
def test_build_backbone_maps_images_to_features_of_the_stated_dimension(name, dim):
    encoder, features = build_backbone(name, bn_splits=2)
    assert features == dim
    out = encoder(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, dim)
    assert torch.isfinite(out).all()


def test_build_backbone_uses_split_batchnorm_everywhere():
    for name in ("resnet18", "resnet50", "convnet"):
        encoder, _ = build_backbone(name, bn_splits=4)
        norms = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(isinstance(m, SplitBatchNorm) and m.num_splits == 4 for m in norms)


def test_resnet_cifar_stem_is_a_3x3_stride_1_conv_without_maxpool():
    encoder, _ = build_backbone("resnet18", cifar_stem=True)
    conv1 = encoder.conv1
    assert (conv1.kernel_size, conv1.stride, conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert conv1.bias is None
    assert isinstance(encoder.maxpool, nn.Identity)
    assert isinstance(encoder.fc, nn.Identity)


def test_resnet_without_cifar_stem_keeps_the_imagenet_stem():
    encoder, _ = build_backbone("resnet18", cifar_stem=False)
    assert encoder.conv1.kernel_size == (7, 7)
    assert isinstance(encoder.maxpool, nn.MaxPool2d)


@pytest.mark.parametrize("size", [16, 24, 32, 64])
def test_convnet_accepts_any_input_size_from_16(size):
    encoder = ConvNet()
    assert encoder(torch.randn(2, 3, size, size)).shape == (2, 128)


def test_convnet_widths_set_the_feature_dimension():
    encoder = ConvNet(widths=(8, 16), stem_width=4)
    assert encoder.num_features == 16
    assert encoder(torch.randn(2, 3, 32, 32)).shape == (2, 16)


def test_convnet_rejects_empty_widths():
    with pytest.raises(ValueError, match="widths"):
        ConvNet(widths=())


def test_convnet_trains_with_split_batchnorm():
    encoder, _ = build_backbone("convnet", bn_splits=8)
    encoder(torch.randn(16, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())


def test_build_backbone_rejects_unknown_name_saying_where_the_names_are():
    with pytest.raises(ValueError, match=r"'resnet_50'.*did you mean 'resnet50'.*list_models"):
        build_backbone("resnet_50")


@pytest.mark.parametrize("bad", [0, -2])
def test_build_backbone_rejects_bn_splits_below_one(bad):
    with pytest.raises(ValueError, match=f"bn_splits.*{bad}"):
        build_backbone("convnet", bn_splits=bad)
