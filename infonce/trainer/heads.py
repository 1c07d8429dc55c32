"""The small networks a method puts on top of its backbone: projectors and predictors, each
as its source builds it.

- :func:`projection_head`: MoCo v1's linear head; MoCo v2's and SupCon's ``Linear-ReLU-Linear``.
- :func:`simclr_projector`: lightly's ``SimCLRProjectionHead``.
- :func:`moco_v3_mlp`: facebookresearch/moco-v3's ``_build_mlp`` (also solo-learn's).
"""

from torch import nn

__all__ = ["moco_v3_mlp", "projection_head", "simclr_projector"]


def projection_head(
    in_dim: int, out_dim: int, kind: str, hidden_dim: int | None = None
) -> nn.Module:
    """MoCo v1's linear head, or MoCo v2's and SupCon's ``Linear-ReLU-Linear`` (with biases).

    Args:
        in_dim, out_dim: input and output widths.
        kind: ``"linear"`` or ``"mlp"``.
        hidden_dim: the MLP's hidden width (default: ``in_dim``).

    Raises:
        ValueError: another ``kind``.
    """
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":
        hidden_dim = hidden_dim or in_dim
        return nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
        )
    raise ValueError(f"head must be 'linear' or 'mlp', got {kind!r}")


def simclr_projector(
    in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, batch_norm: bool = True
) -> nn.Sequential:
    """lightly's ``SimCLRProjectionHead``: ``layers`` Linear layers, each followed by
    BatchNorm1d (with affine parameters) when ``batch_norm``, ReLU between them; a Linear has a
    bias only when no BatchNorm follows it.

    Shape:
        (N, in_dim) -> (N, out_dim).

    Raises:
        ValueError: ``layers < 2`` (SimCLR's projector has a hidden layer).
    """
    if layers < 2:
        raise ValueError(f"projector_layers must be >= 2, got {layers}")
    modules: list[nn.Module] = []
    for i in range(layers):
        d_in, d_out = in_dim if i == 0 else hidden_dim, out_dim if i == layers - 1 else hidden_dim
        modules.append(nn.Linear(d_in, d_out, bias=not batch_norm))
        if batch_norm:
            modules.append(nn.BatchNorm1d(d_out))
        if i < layers - 1:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def moco_v3_mlp(
    in_dim: int, hidden_dim: int, out_dim: int, layers: int, last_bn: bool
) -> nn.Sequential:
    """MoCo v3's MLP (``_build_mlp`` of facebookresearch/moco-v3): ``layers`` Linear layers
    without bias, each but the last followed by BatchNorm1d and ReLU; with ``last_bn`` the
    output also passes a BatchNorm1d without affine parameters (the projector's; the
    predictor has none).

    Shape:
        (N, in_dim) -> (N, out_dim).

    Raises:
        ValueError: ``layers < 1``.
    """
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    modules: list[nn.Module] = []
    for i in range(layers):
        d_in, d_out = in_dim if i == 0 else hidden_dim, out_dim if i == layers - 1 else hidden_dim
        modules.append(nn.Linear(d_in, d_out, bias=False))
        if i < layers - 1:
            modules += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            modules.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*modules)
