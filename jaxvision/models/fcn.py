"""Semantic segmentation models: a fully convolutional network and the sliding-window baseline.

:class:`FCN` runs the shared ResNet backbone (downsampling to ``C5``) and a decoder that
upsamples back to the input resolution one backbone scale at a time, with the upsampler
chosen by name (``UPSAMPLERS``):

* ``nearest``: each value becomes a ``f x f`` block (``ops.nearest_upsample``);
* ``bed_of_nails``: each value at the top-left of its block, zeros elsewhere
  (``ops.bed_of_nails_unpool``);
* ``max_unpool``: SegNet's unpooling: each value goes back to where the encoder's map at the
  finer scale had its maximum in that block (``ops.max_pool_with_indices`` of the encoder's
  lateral map, then ``ops.max_unpool``), zeros elsewhere. ResNet downsamples with strided
  convolutions, so the encoder's pooling indices are taken from its lateral map at each scale
  (the map the skip connection adds) rather than from the pooling that downsampled it;
* ``bilinear``: fixed bilinear interpolation (``jax.image.resize``, half-pixel centres);
* ``transposed``: the learnable upsampling of FCN (Long et al. 2015): a transposed
  convolution with kernel ``2f``, stride ``f`` (``layers.ConvTranspose``).

Decoder, from the coarsest scale: ``x = relu(norm(conv3x3(C5)))``, then for every finer scale
``s`` (``C4, C3, C2`` and, when ``C2`` is coarser than the input, the image itself):
``x = relu(norm(conv3x3(upsample(x) + lateral_s)))`` where ``lateral_s = norm(conv1x1(C_s))``
projects the encoder's features to the width of ``x`` (the skip connection, FCN-8s style,
added only when ``skips``; ``max_unpool`` takes its indices from it either way). The
decoder's width may shrink towards the fine scales (``decoder_channels``), where maps are
large. A 1x1 convolution gives the class logits at the input resolution. Inputs of any size
are padded (bottom/right, zeros of the normalized image) to a multiple of the coarsest stride
and the logits cropped back.

:class:`PatchClassifier` is the sliding-window baseline: a small CNN (a backbone preset)
classifies the centre pixel of a ``patch_size`` square patch; :func:`sliding_window_logits`
classifies every pixel of an image that way, a chunk of rows at a time.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision import ops
from jaxvision.models.layers import ConvTranspose
from jaxvision.models.resnet import build_backbone, make_norm

UPSAMPLERS = ("nearest", "bed_of_nails", "max_unpool", "bilinear", "transposed")
# Backbone features the decoder climbs, coarsest first.
FEATURE_LEVELS = ("C5", "C4", "C3", "C2")


def check_upsampler(upsampler: str) -> None:
  """Raises a ValueError naming the choices when ``upsampler`` is not one of ``UPSAMPLERS``."""
  if upsampler not in UPSAMPLERS:
    raise ValueError(f"Unknown model.upsampler {upsampler!r}; use one of {UPSAMPLERS}.")


class Upsample(nn.Module):
  """One decoder upsampling by an integer ``factor`` with the chosen upsampler.

  Attributes:
    upsampler: one of ``UPSAMPLERS``.
    factor: static int >= 2.
  """
  upsampler: str
  factor: int

  @nn.compact
  def __call__(self, x: jax.Array, encoder_map: jax.Array | None = None) -> jax.Array:
    """Upsamples ``x``.

    Args:
      x: ``[N, h, w, D]`` decoder features.
      encoder_map: ``[N, h * factor, w * factor, D]``, the encoder's map at the target scale:
        ``max_unpool`` puts each value where its block of this map has its maximum (the
        other upsamplers do not read it).

    Returns:
      ``[N, h * factor, w * factor, D]``.
    """
    check_upsampler(self.upsampler)
    batch, height, width, channels = x.shape
    shape = (batch, height * self.factor, width * self.factor, channels)
    if self.upsampler == "nearest":
      return ops.nearest_upsample(x, self.factor)
    if self.upsampler == "bed_of_nails":
      return ops.bed_of_nails_unpool(x, self.factor)
    if self.upsampler == "max_unpool":
      if encoder_map is None:
        raise ValueError("max_unpool unpools to the maxima of the encoder's map at the target "
                         "scale: pass encoder_map.")
      chex.assert_shape(encoder_map, shape)
      _, indices = ops.max_pool_with_indices(encoder_map, self.factor)
      return ops.max_unpool(x, indices, shape[1:3])
    if self.upsampler == "bilinear":
      return jax.image.resize(x, shape, "bilinear")
    # Kernel 2f, stride f, padding f/2: exactly f times larger, every output pixel covered
    # by two taps per axis (FCN's bilinear-sized kernels).
    return ConvTranspose(channels, kernel_size=2 * self.factor, strides=self.factor,
                         padding=self.factor // 2)(x)


class FCN(nn.Module):
  """Fully convolutional network: backbone, then an upsampling decoder to per-pixel logits.

  Attributes:
    num_classes: C, background included.
    upsampler: one of ``UPSAMPLERS``.
    backbone: a ``jaxvision.models.resnet`` preset; its submodule is named ``backbone``.
    backbone_kwargs: overrides of the preset (``stem``, ``width``, ``norm``).
    decoder_channels: the decoder's width: one int for every scale, or one per scale,
      coarsest first: ``C5, C4, C3, C2`` and ``image`` when the stem downsamples (5 widths
      for the ``stride2`` and ``imagenet`` stems, 4 for ``small``).
    skips: add the encoder's lateral map at each scale after upsampling (FCN-8s / U-Net
      style); False upsamples the coarse features alone (``max_unpool`` still takes its
      indices from the lateral maps, which then get no gradient and keep their
      initialization).
  """
  num_classes: int
  upsampler: str = "transposed"
  backbone: str = "resnet_small"
  backbone_kwargs: Any = None
  decoder_channels: int | Sequence[int] = 32
  skips: bool = True

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    """Per-pixel class logits.

    Args:
      images: ``[N, H, W, C_in]`` normalized float images, any ``H, W >= 1``.
      train: batch statistics (and their update) in the normalization layers.

    Returns:
      ``[N, H, W, num_classes]`` float32 logits.
    """
    chex.assert_rank(images, 4)
    check_upsampler(self.upsampler)
    kwargs = dict(self.backbone_kwargs or {})
    backbone = build_backbone(self.backbone, name="backbone", **kwargs)
    norm = make_norm(kwargs.get("norm", "batch"), train)
    # Scales, coarsest first; the image itself when C2 is coarser than the input.
    levels = FEATURE_LEVELS + (("image",) if backbone.strides["C2"] > 1 else ())
    strides = {**backbone.strides, "image": 1}
    widths = self._widths(levels)
    height, width = images.shape[1:3]
    stride = strides["C5"]
    padded = jnp.pad(images, ((0, 0), (0, -height % stride), (0, -width % stride), (0, 0)))
    features = {**backbone(padded, train), "image": padded}

    x = nn.Conv(widths[0], (3, 3), padding=1, use_bias=False, name="top_conv")(features["C5"])
    x = nn.relu(norm(name="top_norm")(x))
    for previous, level, channels in zip(levels, levels[1:], widths[1:]):
      lateral = None
      if self.skips or self.upsampler == "max_unpool":
        lateral = nn.Conv(x.shape[-1], (1, 1), use_bias=False, name=f"lateral_{level}")(
            features[level])
        lateral = norm(name=f"lateral_{level}_norm")(lateral)
      x = Upsample(self.upsampler, strides[previous] // strides[level],
                   name=f"upsample_{level}")(x, lateral)
      if self.skips:
        x = x + lateral
      x = nn.Conv(channels, (3, 3), padding=1, use_bias=False, name=f"decoder_{level}")(x)
      x = nn.relu(norm(name=f"decoder_{level}_norm")(x))
    logits = nn.Conv(self.num_classes, (1, 1), name="classifier")(x)
    return logits[:, :height, :width].astype(jnp.float32)

  def _widths(self, levels: tuple[str, ...]) -> tuple[int, ...]:
    """The decoder's width at each of ``levels``."""
    if isinstance(self.decoder_channels, int):
      return (self.decoder_channels,) * len(levels)
    widths = tuple(self.decoder_channels)
    if len(widths) != len(levels):
      raise ValueError(f"model.decoder_channels {widths} must give one width per decoder "
                       f"scale {levels} (or be one int); this backbone's stem gives "
                       f"{len(levels)} scales.")
    return widths


class PatchClassifier(nn.Module):
  """The sliding-window baseline's CNN: the class of a patch's centre pixel.

  Attributes:
    num_classes: C.
    backbone: a ``jaxvision.models.resnet`` preset (a small one); submodule ``backbone``.
    backbone_kwargs: overrides of the preset.
  """
  num_classes: int
  backbone: str = "resnet_tiny"
  backbone_kwargs: Any = None

  @nn.compact
  def __call__(self, patches: jax.Array, train: bool) -> jax.Array:
    """Logits ``[N, C]`` of normalized patches ``[N, P, P, C_in]`` centred on the pixels."""
    chex.assert_rank(patches, 4)
    backbone = build_backbone(self.backbone, name="backbone", **(self.backbone_kwargs or {}))
    return nn.Dense(self.num_classes, name="classifier")(backbone(patches, train)["pooled"])


def check_patch_size(patch_size: int) -> None:
  """Raises a ValueError unless ``patch_size`` is odd and positive (a pixel is its centre)."""
  if not isinstance(patch_size, int) or patch_size < 1 or patch_size % 2 == 0:
    raise ValueError(f"model.patch_size must be an odd positive int (the classified pixel is "
                     f"the patch's centre); got {patch_size!r}.")


def pad_for_patches(images: jax.Array, patch_size: int) -> jax.Array:
  """``[B, H, W, C]`` -> ``[B, H + P - 1, W + P - 1, C]``, zero-padded by ``P // 2`` on every
  side, so that pixel ``(i, j)``'s patch starts at ``(i, j)`` of the padded image."""
  check_patch_size(patch_size)
  radius = patch_size // 2
  return jnp.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)))


def patches_at(padded: jax.Array, rows: jax.Array, cols: jax.Array, patch_size: int
               ) -> jax.Array:
  """The patches centred on given pixels of each image.

  Args:
    padded: ``[B, H + P - 1, W + P - 1, C]`` from :func:`pad_for_patches`.
    rows, cols: int ``[B, K]`` pixel coordinates in the unpadded image.
    patch_size: P (odd).

  Returns:
    ``[B, K, P, P, C]``; patch ``k`` of image ``b`` is centred on ``(rows[b, k], cols[b, k])``.
  """
  chex.assert_rank(padded, 4)
  chex.assert_equal_shape([rows, cols])

  def one_image(image, image_rows, image_cols):
    return jax.vmap(lambda row, col: jax.lax.dynamic_slice(
        image, (row, col, 0), (patch_size, patch_size, image.shape[-1])))(image_rows, image_cols)

  return jax.vmap(one_image)(padded, rows, cols)


def sliding_window_logits(classify: Callable[[jax.Array], jax.Array], images: jax.Array,
                          patch_size: int, rows_per_chunk: int = 1) -> jax.Array:
  """Classifies every pixel from the patch around it, ``rows_per_chunk`` rows at a time.

  The patches of a chunk of rows are cut, classified and dropped before the next chunk
  (``lax.map``), so memory is bounded by ``B * W * rows_per_chunk`` patches, not ``B * H * W``.

  Args:
    classify: normalized patches ``[N, P, P, C]`` -> logits ``[N, K]``.
    images: ``[B, H, W, C]`` normalized images.
    patch_size: P (odd).
    rows_per_chunk: image rows classified together (static, >= 1).

  Returns:
    ``[B, H, W, K]`` logits.
  """
  if not isinstance(rows_per_chunk, int) or rows_per_chunk < 1:
    raise ValueError(f"model.rows_per_chunk must be a positive int; got {rows_per_chunk!r}.")
  chex.assert_rank(images, 4)
  batch, height, width, channels = images.shape
  padded = pad_for_patches(images, patch_size)
  cols = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), (batch, width))

  def classify_row(row):
    patches = patches_at(padded, jnp.full((batch, width), row, jnp.int32), cols, patch_size)
    logits = classify(patches.reshape(batch * width, patch_size, patch_size, channels))
    return logits.reshape(batch, width, -1)

  rows = jax.lax.map(classify_row, jnp.arange(height, dtype=jnp.int32),
                     batch_size=min(rows_per_chunk, height))
  return jnp.transpose(rows, (1, 0, 2, 3))
