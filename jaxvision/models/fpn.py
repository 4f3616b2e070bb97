"""Feature Pyramid Network (Lin et al., 2017) on named backbone features.

The backbone's ``{"C2", ..., "C5"}`` maps become ``{"P2", ..., "P5"}`` maps with the same
strides and ``channels`` channels each: a lateral 1x1 convolution per level, a top-down
pathway that adds the nearest-upsampled coarser level, and a 3x3 output convolution per
level. ``P6`` is a stride-2 subsampling of ``P5`` (torchvision's ``LastLevelMaxPool``),
used by the RPN only, as in the paper.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


def upsample_nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Nearest-neighbour resize of NHWC ``x`` to spatial ``size`` (PyTorch ``"nearest"``).

  Output pixel ``i`` reads input pixel ``floor(i * in / out)``, so an exact 2x upsample
  repeats each pixel and odd sizes (an image side not divisible by 32) match torchvision.
  """
  chex.assert_rank(x, 4)
  rows = (jnp.arange(size[0]) * x.shape[1]) // size[0]
  cols = (jnp.arange(size[1]) * x.shape[2]) // size[1]
  return x[:, rows][:, :, cols]


class FPN(nn.Module):
  """Feature Pyramid Network.

  Attributes:
    channels: channels of every output level (256 in the paper).
    levels: backbone feature names, finest first; output names replace ``C`` by ``P``.
    extra_max_pool_level: add ``P{last+1}`` = ``P{last}`` subsampled by 2 (1x1 max-pool).
    dtype: compute dtype (parameters stay float32).
  """
  channels: int = 256
  levels: Sequence[str] = ("C2", "C3", "C4", "C5")
  extra_max_pool_level: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Builds the pyramid.

    Args:
      features: NHWC float maps keyed by ``levels`` (extra keys are ignored); each level
        has half the spatial size (rounded up) of the previous one.

    Returns:
      ``{"P2": [N, H2, W2, channels], ...}`` for each input level, plus the extra level.
    """
    missing = [name for name in self.levels if name not in features]
    if missing:
      raise ValueError(f"FPN needs backbone features {missing}; got {sorted(features)}.")
    for name in self.levels:
      chex.assert_rank(features[name], 4)
    out_names = ["P" + name[1:] for name in self.levels]
    laterals = [
        nn.Conv(self.channels, (1, 1), dtype=self.dtype, name=f"lateral_{out}")(features[name])
        for name, out in zip(self.levels, out_names)
    ]
    # Top-down: start at the coarsest level, add each upsampled map to the next finer one.
    merged = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
      merged.append(lateral + upsample_nearest(merged[-1], lateral.shape[1:3]))
    merged.reverse()
    outputs = {
        out: nn.Conv(self.channels, (3, 3), padding=1, dtype=self.dtype, name=f"output_{out}")(x)
        for out, x in zip(out_names, merged)
    }
    if self.extra_max_pool_level:
      last = outputs[out_names[-1]]
      outputs[f"P{int(out_names[-1][1:]) + 1}"] = last[:, ::2, ::2]
    return outputs
