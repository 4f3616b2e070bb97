"""Panoptic FPN's semantic head (Kirillov et al., 2019): stuff classes + "things" from the FPN.

:class:`SemanticFPNHead` (detectron2's ``SemSegFPNHead``) reads ``P2..P5`` (strides 4..32).
Each level goes through ``log2(stride / 4)`` stages (one for ``P2``) of 3x3 conv + norm +
ReLU, each stage but ``P2``'s followed by a 2x upsampling, so that every level arrives at
stride 4 with ``channels`` channels; the four maps are summed, a 1x1 convolution gives the
``S + 1`` logits (0 = any thing, ``s = 1..S`` stuff class ``s``), and a 4x upsampling brings
them to the image. The upsamplings are the FCN's (:class:`jaxvision.models.fcn.Upsample`;
bilinear as in the paper by default).

:func:`semantic_targets` maps the dataset's semantic map (``label + 1`` on things, ``C + s``
on stuff ``s``) to the head's classes; :func:`semantic_loss` is the per-pixel cross-entropy
at image resolution with unlabelled pixels (``data.ignore_label``, letterbox padding, or 0,
"background", which a dataset with stuff does not have) left out, as detectron2 computes it.
"""

from __future__ import annotations

from typing import Any, Mapping

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.models.fcn import UPSAMPLERS, Upsample
from jaxvision.models.losses import pixel_cross_entropy
from jaxvision.models.resnet import make_norm

# The levels the head reads and the stride it merges them at (detectron2's common_stride).
SEMANTIC_LEVELS = ("P2", "P3", "P4", "P5")
SEMANTIC_STRIDE = 4
# max_unpool needs the encoder's map at each target scale, which the FPN does not keep.
SEMANTIC_UPSAMPLERS = tuple(u for u in UPSAMPLERS if u != "max_unpool")
# Label of the pixels the semantic loss leaves out (any value outside [0, S] is left out).
UNLABELLED = -1


def check_semantic_upsampler(upsampler: str) -> None:
  """Raises a ValueError naming the choices unless ``upsampler`` is in ``SEMANTIC_UPSAMPLERS``."""
  if upsampler not in SEMANTIC_UPSAMPLERS:
    raise ValueError(f"Unknown model.semantic_upsampler {upsampler!r}; use one of "
                     f"{SEMANTIC_UPSAMPLERS}.")


class SemanticFPNHead(nn.Module):
  """Per-pixel stuff + "things" logits from the FPN levels ``P2..P5``.

  Attributes:
    num_classes: ``S + 1`` (class 0: things; 1..S: stuff).
    channels: width of every stage (128 in Panoptic FPN).
    norm: ``"group"`` (GroupNorm, the paper's), ``"batch"`` or ``"frozen"``.
    upsampler: one of ``SEMANTIC_UPSAMPLERS`` for the 2x stages and the final 4x.
    dtype: compute dtype; the logits are float32 whatever it is.
  """
  num_classes: int
  channels: int = 128
  norm: str = "group"
  upsampler: str = "bilinear"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pyramid: Mapping[str, jax.Array], image_size: tuple[int, int],
               train: bool) -> jax.Array:
    """Logits ``float32[N, H, W, num_classes]`` at ``image_size = (H, W)``.

    Args:
      pyramid: ``{"P2": [N, ceil(H/4), ceil(W/4), C], ..., "P5": ...}`` (extra levels such as
        ``P6`` are ignored).
      image_size: ``(H, W)`` of the input images.
      train: batch statistics in the norm layers (``norm="batch"`` only).
    """
    check_semantic_upsampler(self.upsampler)
    missing = [name for name in SEMANTIC_LEVELS if name not in pyramid]
    if missing:
      raise ValueError(f"SemanticFPNHead needs the FPN levels {missing}; got {sorted(pyramid)}.")
    norm = make_norm(self.norm, train, self.dtype)
    base = pyramid[SEMANTIC_LEVELS[0]]
    chex.assert_rank(base, 4)
    merged_size = base.shape[1:3]
    merged = 0.0
    for name in SEMANTIC_LEVELS:
      x = pyramid[name]
      stages = max(1, (2 ** int(name[1:]) // SEMANTIC_STRIDE).bit_length() - 1)
      for stage in range(stages):
        x = nn.Conv(self.channels, (3, 3), padding=1, use_bias=False, dtype=self.dtype,
                    name=f"{name}_conv{stage}")(x)
        x = nn.relu(norm(name=f"{name}_norm{stage}")(x))
        if name != SEMANTIC_LEVELS[0]:
          x = Upsample(self.upsampler, 2, name=f"{name}_upsample{stage}")(x)
      # A side not divisible by 32 rounds up at each level, so 2x of a coarse level can be
      # one pixel longer than P2: crop it (the FCN's pad-then-crop).
      merged = merged + x[:, :merged_size[0], :merged_size[1]]
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="predictor")(merged)
    logits = Upsample(self.upsampler, SEMANTIC_STRIDE, name="upsample_logits")(logits)
    height, width = image_size
    chex.assert_axis_dimension_gteq(logits, 1, height)
    chex.assert_axis_dimension_gteq(logits, 2, width)
    return logits[:, :height, :width].astype(jnp.float32)


def semantic_targets(semantic: jax.Array, num_thing_classes: int, num_stuff_classes: int
                     ) -> jax.Array:
  """The dataset's semantic map -> the head's classes.

  Args:
    semantic: int ``[...]``: ``1..C`` on things (``label + 1``), ``C + s`` on stuff ``s``
      (``s = 1..S``); anything else (``data.ignore_label`` padding, 0) is unlabelled.
    num_thing_classes: C.
    num_stuff_classes: S.

  Returns:
    int32 ``[...]``: 0 on things, ``s`` on stuff ``s``, ``UNLABELLED`` elsewhere.
  """
  semantic = jnp.asarray(semantic, jnp.int32)
  is_thing = (semantic >= 1) & (semantic <= num_thing_classes)
  is_stuff = (semantic > num_thing_classes) & (semantic <= num_thing_classes + num_stuff_classes)
  return jnp.where(is_thing, 0, jnp.where(is_stuff, semantic - num_thing_classes, UNLABELLED))


def semantic_loss(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Cross-entropy of the head's logits and pixel accuracy, over the labelled pixels.

  Args:
    logits: ``[N, H, W, S + 1]``.
    targets: int ``[N, H, W]`` from :func:`semantic_targets`.

  Returns:
    ``(loss, accuracy)`` float32 scalars (0 when no pixel is labelled).
  """
  chex.assert_equal_shape_prefix([logits, targets], 3)
  loss = pixel_cross_entropy(logits, targets, UNLABELLED)
  labelled = (targets >= 0) & (targets < logits.shape[-1])
  correct = labelled & (jnp.argmax(logits, -1) == targets)
  accuracy = jnp.sum(correct) / jnp.maximum(jnp.sum(labelled), 1)
  return loss, accuracy.astype(jnp.float32)
