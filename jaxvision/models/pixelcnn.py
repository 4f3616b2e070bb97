"""PixelCNN (masked convolutions) and gated PixelCNN (vertical and horizontal stacks).

Pixels are generated in raster order (row by row, left to right) and, within a pixel,
channel by channel (R, then G, then B). Every layer's features are split into ``channels``
contiguous groups; group ``g`` of a pixel may see channels ``< g`` of that pixel's input
(and every channel of the pixels before it). Masks (van den Oord et al. 2016):

* type ``A`` (first layer): the centre tap connects input group ``i`` to output group ``o``
  only when ``i < o``: a pixel never sees its own value.
* type ``B`` (later layers): ``i <= o``: a feature may see what its own group saw.

:class:`PixelCNN` stacks a 7 x 7 type-A convolution and 3 x 3 type-B residual blocks; its
receptive field has a blind spot (pixels to the upper right it never sees).
:class:`GatedPixelCNN` (van den Oord et al., "Conditional Image Generation with PixelCNN
Decoders", 2016) has no blind spot: a vertical stack sees every row above (k x k kernels
masked to the rows above the centre, and the centre row once the input is strictly above), a
horizontal stack sees the pixels to the left in the current row (1 x k kernels), and the
vertical stack feeds the horizontal one. Layers are gated, ``tanh(a) * sigmoid(b)``, and
optionally conditioned on a class (one-hot, a learned bias per layer).

Both output logits ``[B, H, W, C, num_levels]`` (``output="softmax"``) or the parameters
of a discretized logistic mixture per pixel ``[B, H, W, P]`` (``"logistic_mixture"``,
PixelCNN++: the masks then group by pixel, not by channel). ``rows_above`` is how many rows
above a pixel its output can depend on (the fast sampler recomputes only those rows).
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

MASK_TYPES = ("A", "B")
STACKS = ("full", "vertical", "horizontal")


def feature_groups(features: int, channels: int, chunks: int = 1) -> np.ndarray:
  """The channel group (``[0, channels)``) of each of ``features`` features.

  Features are ``chunks`` equal blocks (a gated layer's ``tanh`` and ``sigmoid`` halves), each
  split into ``channels`` contiguous groups, so feature ``k`` of every block is in one group.
  """
  block = features // chunks
  if block * chunks != features or block < channels:
    raise ValueError(f"{features} features cannot be split into {chunks} block(s) of "
                     f"{channels} channel groups; use a multiple of {chunks * channels}.")
  return (np.arange(features) % block) * channels // block


def causal_mask(kernel_size: tuple[int, int], in_groups: np.ndarray, out_groups: np.ndarray,
                mask_type: str, stack: str) -> np.ndarray:
  """The 0/1 kernel mask ``[kh, kw, in, out]`` of a masked convolution.

  ``stack``: ``"full"`` (rows above the centre, and the centre row left of the centre),
  ``"vertical"`` (rows above the centre; the centre row too for type B: the vertical stack's
  input is then already strictly above) or ``"horizontal"`` (a 1 x k kernel: the columns
  left of the centre). The centre tap of ``full`` and ``horizontal`` connects groups by type.
  """
  if mask_type not in MASK_TYPES:
    raise ValueError(f"Unknown mask type {mask_type!r}; use one of {MASK_TYPES}.")
  if stack not in STACKS:
    raise ValueError(f"Unknown stack {stack!r}; use one of {STACKS}.")
  height, width = kernel_size
  if height % 2 == 0 or width % 2 == 0:
    raise ValueError(f"Masked convolutions need odd kernel sizes, got {kernel_size}.")
  if stack == "horizontal" and height != 1:
    raise ValueError(f"The horizontal stack's kernels are 1 x k, got {kernel_size}.")
  cy, cx = height // 2, width // 2
  mask = np.zeros((height, width, len(in_groups), len(out_groups)), np.float32)
  mask[:cy] = 1.0
  if stack == "vertical":
    if mask_type == "B":
      mask[cy] = 1.0
    return mask
  mask[cy, :cx] = 1.0
  centre = (in_groups[:, None] < out_groups[None, :] if mask_type == "A"
            else in_groups[:, None] <= out_groups[None, :])
  mask[cy, cx] = centre
  return mask


class MaskedConv(nn.Module):
  """A 'SAME' convolution whose kernel is multiplied by :func:`causal_mask`.

  Attributes:
    features: Output features.
    kernel_size: ``(kh, kw)``, odd.
    mask_type: ``"A"`` or ``"B"``.
    stack: ``"full"``, ``"vertical"`` or ``"horizontal"``.
    channels: Image channels (the number of groups).
    in_chunks, out_chunks: Blocks of the input/output features (2 for gate pre-activations).
  """

  features: int
  kernel_size: tuple[int, int]
  mask_type: str = "B"
  stack: str = "full"
  channels: int = 1
  in_chunks: int = 1
  out_chunks: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    mask = causal_mask(tuple(self.kernel_size),
                       feature_groups(in_features, self.channels, self.in_chunks),
                       feature_groups(self.features, self.channels, self.out_chunks),
                       self.mask_type, self.stack)
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*self.kernel_size, in_features, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    y = jax.lax.conv_general_dilated(x, kernel * mask, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias


OUTPUTS = ("softmax", "logistic_mixture")


def mixture_num_params(channels: int, num_mixtures: int) -> int:
  """Parameters per pixel of a ``num_mixtures``-component discretized logistic mixture over
  ``channels`` channels: per component a logit, a mean and a log-scale per channel, and one
  coefficient per pair of channels ``j < c`` (channel ``c``'s mean moves linearly with
  channel ``j``'s value); see ``jaxvision.tasks.generative``."""
  return num_mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)


def mask_groups(channels: int, output: str) -> int:
  """Channel groups of the masks: one per channel for the softmax (channel ``c`` of a pixel
  is predicted from channels ``< c``), one for the logistic mixture (every channel's
  parameters come from the pixels before; the mixture itself chains the channels)."""
  if output not in OUTPUTS:
    raise ValueError(f"Unknown output {output!r}; use one of {OUTPUTS}.")
  return channels if output == "softmax" else 1


def output_head(h: jax.Array, channels: int, num_levels: int, hidden: int,
                output: str = "softmax", num_mixtures: int = 0) -> jax.Array:
  """ReLU, 1 x 1 type-B layers -> logits ``[B, H, W, channels, num_levels]`` (``output``
  ``"softmax"``) or the mixture's parameters ``[B, H, W, P]`` (``"logistic_mixture"``, P from
  :func:`mixture_num_params`).

  Must be called inside a compact module (its layers are that module's).
  """
  groups = mask_groups(channels, output)
  h = nn.relu(h)
  h = nn.relu(MaskedConv(hidden, (1, 1), "B", channels=groups, name="head_hidden")(h))
  if output == "logistic_mixture":
    return MaskedConv(mixture_num_params(channels, num_mixtures), (1, 1), "B", channels=1,
                      name="head_mixture")(h)
  # Output k belongs to channel k // num_levels: out_chunks=1 with C * L features.
  logits = MaskedConv(channels * num_levels, (1, 1), "B", channels=channels, name="head_logits")(h)
  return logits.reshape(*h.shape[:3], channels, num_levels)


class PixelCNN(nn.Module):
  """The original PixelCNN: a 7 x 7 type-A layer, residual 3 x 3 type-B blocks, a 1 x 1 head.

  Attributes:
    channels: Image channels.
    num_levels: Values per pixel channel (2 binary, 256 8-bit).
    features: Hidden features (a multiple of ``channels``).
    num_layers: Residual type-B blocks.
    first_kernel: Kernel size of the type-A layer.
    kernel: Kernel size of the type-B layers.
    num_classes: Classes it can be conditioned on (0: unconditional).
    output: ``"softmax"`` (logits per channel) or ``"logistic_mixture"`` (PixelCNN++'s
      parameters per pixel, masks by pixel rather than by channel).
    num_mixtures: The mixture's components.
  """

  channels: int = 1
  num_levels: int = 2
  features: int = 32
  num_layers: int = 4
  first_kernel: int = 7
  kernel: int = 3
  num_classes: int = 0
  output: str = "softmax"
  num_mixtures: int = 5

  @property
  def rows_above(self) -> int:
    return self.first_kernel // 2 + self.num_layers * (self.kernel // 2)

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    chex.assert_rank(x, 4)
    c = mask_groups(self.channels, self.output)
    h = MaskedConv(self.features, (self.first_kernel,) * 2, "A", channels=c, name="input")(x)
    for i in range(self.num_layers):
      y = nn.relu(h)
      y = MaskedConv(self.features, (self.kernel,) * 2, "B", channels=c, name=f"block{i}")(y)
      if labels is not None:
        y = y + nn.Dense(self.features, name=f"condition{i}")(labels)[:, None, None]
      h = h + y
    return output_head(h, self.channels, self.num_levels, self.features, self.output,
                       self.num_mixtures)


def gate(x: jax.Array) -> jax.Array:
  """``tanh(a) * sigmoid(b)`` of the two halves of the last axis."""
  a, b = jnp.split(x, 2, axis=-1)
  return jnp.tanh(a) * jax.nn.sigmoid(b)


class GatedLayer(nn.Module):
  """One gated layer of both stacks; the first (type A) has no residual connection."""

  features: int
  kernel: int
  mask_type: str
  channels: int

  @nn.compact
  def __call__(self, v: jax.Array, h: jax.Array, labels: jax.Array | None
               ) -> tuple[jax.Array, jax.Array]:
    c, f, k = self.channels, self.features, self.kernel
    v_pre = MaskedConv(2 * f, (k, k), self.mask_type, "vertical", c, out_chunks=2,
                       name="vertical")(v)
    h_pre = MaskedConv(2 * f, (1, k), self.mask_type, "horizontal", c,
                       in_chunks=1, out_chunks=2, name="horizontal")(h)
    # The vertical stack only holds rows strictly above: any group may read it.
    h_pre = h_pre + nn.Conv(2 * f, (1, 1), name="vertical_to_horizontal")(v_pre)
    if labels is not None:
      v_pre = v_pre + nn.Dense(2 * f, name="condition_vertical")(labels)[:, None, None]
      h_pre = h_pre + nn.Dense(2 * f, name="condition_horizontal")(labels)[:, None, None]
    v_out = gate(v_pre)
    h_out = MaskedConv(f, (1, 1), "B", "horizontal", c, name="horizontal_out")(gate(h_pre))
    if self.mask_type == "B":
      h_out = h + h_out
    return v_out, h_out


class GatedPixelCNN(nn.Module):
  """Gated PixelCNN without blind spot (see the module docstring).

  Attributes: as :class:`PixelCNN`; ``kernel`` is every layer's (odd) kernel size and
  ``num_layers`` counts all gated layers (the first is type A).
  """

  channels: int = 1
  num_levels: int = 2
  features: int = 32
  num_layers: int = 5
  kernel: int = 3
  num_classes: int = 0
  output: str = "softmax"
  num_mixtures: int = 5

  @property
  def rows_above(self) -> int:
    return self.num_layers * (self.kernel // 2)

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    chex.assert_rank(x, 4)
    v, h = x, x
    groups = mask_groups(self.channels, self.output)
    for i in range(self.num_layers):
      v, h = GatedLayer(self.features, self.kernel, "A" if i == 0 else "B", groups,
                        name=f"layer{i}")(v, h, labels)
    return output_head(h, self.channels, self.num_levels, self.features, self.output,
                       self.num_mixtures)



class IndependentPixels(nn.Module):
  """The baseline: one learned categorical per pixel channel, independent of every other.

  Attributes: ``channels``, ``num_levels``, ``num_classes`` as :class:`PixelCNN` (labels are
  ignored).
  """

  channels: int = 1
  num_levels: int = 2
  num_classes: int = 0
  output: str = "softmax"
  num_mixtures: int = 5

  @property
  def rows_above(self) -> float:
    # Its parameters are per position, so it cannot run on a window of rows (the fast
    # sampler's): the window must be the whole image.
    return float("inf")

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    del labels
    chex.assert_rank(x, 4)
    mask_groups(self.channels, self.output)  # validates the output
    shape = ((self.channels, self.num_levels) if self.output == "softmax"
             else (mixture_num_params(self.channels, self.num_mixtures),))
    logits = self.param("logits", nn.initializers.zeros, (*x.shape[1:3], *shape))
    return jnp.broadcast_to(logits, (x.shape[0], *logits.shape))
