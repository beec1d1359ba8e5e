"""PyTorch reference of phasejax's ResNet, layer for layer, for throughput comparisons.

`build_torch_resnet` builds the same network as `phasejax.models.resnet.ResNet`
from the same stage table (so the two cannot drift apart), and
`copy_nnx_to_torch` copies an NNX model's parameters and BatchNorm statistics
into it; in eval mode both then compute the same function (tests/test_resnet.py
checks it). The training-throughput benchmark (train_throughput.py) imports this
file; it is not part of the phasejax package because torch is a bench-only
dependency (`pip install -e .[bench]`, pinned torch==2.13.0 CPU wheel).

Layout: the torch module takes NCHW input as PyTorch convolutions expect;
`forward_nhwc` accepts phasejax's NHWC arrays. BatchNorm momentum 0.1 equals
Flax's 0.9 (the conventions are complementary); epsilon 1e-5 in both. One known
difference that does not affect outputs: in training mode PyTorch updates the
running variance with the unbiased batch variance, Flax with the biased one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from phasejax.models.resnet import BN_EPSILON, BN_MOMENTUM, BOTTLENECK_EXPANSION, STAGES

TORCH_BN_MOMENTUM = 1.0 - BN_MOMENTUM


def _conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


def _bn(features: int, *, zero_scale: bool = False) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(features, eps=BN_EPSILON, momentum=TORCH_BN_MOMENTUM)
    if zero_scale:
        nn.init.zeros_(bn.weight)
    return bn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, 3, stride)
        self.bn1 = _bn(cout)
        self.conv2 = _conv(cout, cout, 3, 1)
        self.bn2 = _bn(cout, zero_scale=True)
        self.down_conv = self.down_bn = None
        if stride != 1 or cin != cout:
            self.down_conv = _conv(cin, cout, 1, stride)
            self.down_bn = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.down_conv is None else self.down_bn(self.down_conv(x))
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + shortcut)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int) -> None:
        super().__init__()
        cout = mid * BOTTLENECK_EXPANSION
        self.conv1 = _conv(cin, mid, 1, 1)
        self.bn1 = _bn(mid)
        self.conv2 = _conv(mid, mid, 3, stride)
        self.bn2 = _bn(mid)
        self.conv3 = _conv(mid, cout, 1, 1)
        self.bn3 = _bn(cout, zero_scale=True)
        self.down_conv = self.down_bn = None
        if stride != 1 or cin != cout:
            self.down_conv = _conv(cin, cout, 1, stride)
            self.down_bn = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.down_conv is None else self.down_bn(self.down_conv(x))
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + shortcut)


class TorchResNet(nn.Module):
    """NCHW twin of phasejax.models.resnet.ResNet (same attribute names)."""

    def __init__(self, depth: str, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        depth = str(depth)
        if depth not in STAGES:
            raise ValueError(f"unknown ResNet depth {depth!r}; known: {list(STAGES)}")
        kind, counts = STAGES[depth]
        self.depth = depth
        self.stem_conv = _conv(in_channels, width, 7, 2)
        self.stem_bn = _bn(width)
        blocks: list[nn.Module] = []
        cin = width
        for stage, n in enumerate(counts):
            planes = width * 2**stage
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                if kind == "basic":
                    blocks.append(BasicBlock(cin, planes, stride))
                    cin = planes
                else:
                    blocks.append(Bottleneck(cin, planes, stride))
                    cin = planes * BOTTLENECK_EXPANSION
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.head = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.stem_bn(self.stem_conv(x))))
        for block in self.blocks:
            x = block(x)
        return self.head(torch.mean(x, dim=(2, 3)))


def build_torch_resnet(
    depth: str, in_channels: int, num_classes: int, width: int = 64
) -> TorchResNet:
    """The PyTorch network identical to `ResNet(depth, in_channels=..., num_classes=..., width=...)`."""
    return TorchResNet(depth, in_channels, num_classes, width)


def _copy_conv(src: Any, dst: nn.Conv2d) -> None:
    # NNX kernels are HWIO, PyTorch's OIHW.
    kernel = np.asarray(src.kernel[...], dtype=np.float32).transpose(3, 2, 0, 1)
    _assign(dst.weight, kernel, dst)


def _copy_bn(src: Any, dst: nn.BatchNorm2d) -> None:
    _assign(dst.weight, np.asarray(src.scale[...], np.float32), dst)
    _assign(dst.bias, np.asarray(src.bias[...], np.float32), dst)
    _assign(dst.running_mean, np.asarray(src.mean[...], np.float32), dst)
    _assign(dst.running_var, np.asarray(src.var[...], np.float32), dst)


def _assign(target: torch.Tensor, value: np.ndarray, module: nn.Module) -> None:
    if tuple(target.shape) != value.shape:
        raise ValueError(
            f"shape mismatch copying into {type(module).__name__}: torch {tuple(target.shape)} "
            f"vs nnx {value.shape}"
        )
    with torch.no_grad():
        # A writable copy: arrays from JAX are read-only, which torch.from_numpy warns about.
        target.copy_(torch.from_numpy(np.array(value, dtype=np.float32, copy=True)))


def copy_nnx_to_torch(nnx_model: Any, torch_model: TorchResNet) -> TorchResNet:
    """Copy parameters and BatchNorm statistics of an NNX ResNet into its torch twin."""
    if len(nnx_model.blocks) != len(torch_model.blocks):
        raise ValueError(
            f"block count differs: nnx {len(nnx_model.blocks)} vs torch {len(torch_model.blocks)}"
        )
    _copy_conv(nnx_model.stem_conv, torch_model.stem_conv)
    _copy_bn(nnx_model.stem_bn, torch_model.stem_bn)
    for src, dst in zip(nnx_model.blocks, torch_model.blocks, strict=True):
        for name in ("conv1", "conv2", "conv3", "down_conv"):
            if getattr(dst, name, None) is not None:
                _copy_conv(getattr(src, name), getattr(dst, name))
        for name in ("bn1", "bn2", "bn3", "down_bn"):
            if getattr(dst, name, None) is not None:
                _copy_bn(getattr(src, name), getattr(dst, name))
    _assign(
        torch_model.head.weight,
        np.asarray(nnx_model.head.kernel[...], np.float32).T,
        torch_model.head,
    )
    _assign(
        torch_model.head.bias, np.asarray(nnx_model.head.bias[...], np.float32), torch_model.head
    )
    return torch_model


def forward_nhwc(torch_model: nn.Module, x_nhwc: np.ndarray) -> np.ndarray:
    """Run the torch model on an NHWC numpy batch (phasejax's layout); numpy logits out."""
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(x_nhwc, np.float32).transpose(0, 3, 1, 2)))
    with torch.no_grad():
        return torch_model(x).numpy()


def count_torch_params(torch_model: nn.Module) -> int:
    return sum(p.numel() for p in torch_model.parameters())


def parity_report(depth: str, *, width: int, size: int, batch: int, seed: int = 0) -> dict:
    """Build both networks, copy weights, compare eval-mode logits; JSON-ready numbers."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from phasejax.models.resnet import ResNet, count_params

    model = ResNet(depth, in_channels=3, num_classes=1000, width=width, rngs=nnx.Rngs(seed))
    # Non-trivial residual branches and running statistics, so equality means something.
    rng = np.random.default_rng(seed)
    for block in model.blocks:
        last = block.bn3 if hasattr(block, "bn3") else block.bn2
        last.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, last.scale.shape), jnp.float32)
    model.train()
    x = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    forward = nnx.jit(lambda m, x: m(x))
    forward(model, jnp.asarray(x))  # one train-mode pass moves the running statistics
    model.eval()
    expected = np.asarray(forward(model, jnp.asarray(x)))
    twin = copy_nnx_to_torch(model, build_torch_resnet(depth, 3, 1000, width)).eval()
    got = forward_nhwc(twin, x)
    return {
        "depth": depth,
        "width": width,
        "input": [batch, size, size, 3],
        "params_nnx": count_params(model),
        "params_torch": count_torch_params(twin),
        "max_abs_diff": float(np.abs(got - expected).max()),
        "max_abs_logit": float(np.abs(expected).max()),
        "torch": torch.__version__,
        "jax": jax.__version__,
    }


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Check the torch twin against the NNX ResNet.")
    parser.add_argument("--depth", default="18", choices=list(STAGES))
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    a = parser.parse_args()
    print(json.dumps(parity_report(a.depth, width=a.width, size=a.size, batch=a.batch), indent=2))
