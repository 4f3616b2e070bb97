"""ResNet backbones (v1.5) returning named multi-scale features.

Every head in jaxvision (classification, box regression, FPN, masks, segmentation)
attaches to the same backbone output: a dict ``{"C2", "C3", "C4", "C5", "pooled"}`` where
``Ck`` is the NHWC output of stage ``k`` (stride ``2**k`` with the ImageNet stem) and
``pooled`` is the global average of ``C5``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


def make_norm(norm: str, train: bool, dtype=jnp.float32):
  """The normalization layer factory: ``batch`` (BatchNorm), ``group`` or ``frozen``.

  ``frozen`` is BatchNorm that always uses its running statistics (detection fine-tuning
  with few images per device, as in torchvision's FrozenBatchNorm2d).
  """
  if norm == "batch":
    return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=dtype)
  if norm == "frozen":
    return functools.partial(nn.BatchNorm, use_running_average=True, epsilon=1e-5, dtype=dtype)
  if norm == "group":
    return functools.partial(nn.GroupNorm, num_groups=None, group_size=8, dtype=dtype)
  raise ValueError(f"Unknown norm {norm!r}; use 'batch', 'frozen' or 'group'.")


def _residual(x: jax.Array, y: jax.Array, filters: int, strides: int, norm) -> jax.Array:
  """``relu(shortcut(x) + y)``; a 1x1 projection (``proj``, ``proj_norm``) when shapes differ.

  Called inside a block's compact ``__call__``, so the projection belongs to that block.
  """
  if x.shape != y.shape:
    x = nn.Conv(filters, (1, 1), strides, use_bias=False, name="proj")(x)
    x = norm(name="proj_norm")(x)
  return nn.relu(x + y)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""
  filters: int
  strides: int
  norm: str = "batch"

  @nn.compact
  def __call__(self, x, train: bool):
    norm = make_norm(self.norm, train)
    y = nn.Conv(self.filters, (3, 3), self.strides, padding=1, use_bias=False)(x)
    y = nn.relu(norm()(y))
    y = nn.Conv(self.filters, (3, 3), padding=1, use_bias=False)(y)
    # Zero-init of the last norm's scale makes each block start as the identity.
    y = norm(scale_init=nn.initializers.zeros)(y)
    return _residual(x, y, self.filters, self.strides, norm)


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 (strided, v1.5) -> 1x1 with 4x expansion (ResNet-50 and deeper)."""
  filters: int
  strides: int
  norm: str = "batch"

  @nn.compact
  def __call__(self, x, train: bool):
    norm = make_norm(self.norm, train)
    y = nn.Conv(self.filters, (1, 1), use_bias=False)(x)
    y = nn.relu(norm()(y))
    y = nn.Conv(self.filters, (3, 3), self.strides, padding=1, use_bias=False)(y)
    y = nn.relu(norm()(y))
    y = nn.Conv(self.filters * 4, (1, 1), use_bias=False)(y)
    y = norm(scale_init=nn.initializers.zeros)(y)
    return _residual(x, y, self.filters * 4, self.strides, norm)


class ResNet(nn.Module):
  """ResNet feature extractor.

  Attributes:
    stage_sizes: blocks per stage (4 stages: C2..C5).
    block: ``"basic"`` or ``"bottleneck"``.
    width: channels of the first stage; doubled at each later stage.
    stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool: C2 at stride 4), ``"stride2"``
      (one 3x3/2 conv: C2 at stride 2, for 64-128 px images with small objects) or
      ``"small"`` (one 3x3/1 conv: C2 at stride 1, for 32 px images).
    norm: see :func:`make_norm`.
  """
  stage_sizes: Sequence[int]
  block: str = "basic"
  width: int = 64
  stem: str = "imagenet"
  norm: str = "batch"

  @property
  def strides(self) -> dict[str, int]:
    """Stride of each named feature map relative to the input image."""
    base = {"imagenet": 4, "stride2": 2, "small": 1}[self.stem]
    return {f"C{k}": base * 2 ** (k - 2) for k in range(2, 6)}

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
    chex.assert_rank(images, 4)
    if self.block not in ("basic", "bottleneck"):
      raise ValueError(f"Unknown ResNet block {self.block!r}; use 'basic' or 'bottleneck'.")
    block = BasicBlock if self.block == "basic" else BottleneckBlock
    norm = make_norm(self.norm, train)
    if self.stem == "imagenet":
      x = nn.Conv(self.width, (7, 7), 2, padding=3, use_bias=False, name="stem_conv")(images)
      x = nn.relu(norm(name="stem_norm")(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    elif self.stem in ("stride2", "small"):
      stride = 2 if self.stem == "stride2" else 1
      x = nn.Conv(self.width, (3, 3), stride, padding=1, use_bias=False, name="stem_conv")(images)
      x = nn.relu(norm(name="stem_norm")(x))
    else:
      raise ValueError(f"Unknown ResNet stem {self.stem!r}; use 'imagenet', 'stride2' or 'small'.")
    features = {}
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = block(self.width * 2**i, strides, self.norm, name=f"stage{i + 1}_block{j + 1}")(
            x, train)
      features[f"C{i + 2}"] = x
    features["pooled"] = jnp.mean(x, axis=(1, 2))
    return features


BACKBONES = {
    # Tests and CI: a few thousand parameters per stage.
    "resnet_tiny": functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), width=8),
    # Laptop-CPU experiments on 64-256 px synthetic data.
    "resnet_small": functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), width=32),
    "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2)),
    "resnet34": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3)),
    "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck"),
    "resnet101": functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block="bottleneck"),
}


def build_backbone(preset: str, **overrides) -> ResNet:
  """A backbone preset by name, e.g. ``build_backbone("resnet18", stem="small")``.

  Call it with ``name="backbone"`` among ``overrides`` inside a parent module so that
  transfer learning finds the parameters under ``params["backbone"]``.
  """
  if preset not in BACKBONES:
    raise ValueError(f"Unknown backbone {preset!r}; choose one of {sorted(BACKBONES)}.")
  return BACKBONES[preset](**overrides)
