"""A convolutional autoencoder on the shared backbone: encoder = backbone, conv decoder.

The encoder's C5 map goes through a 1 x 1 ``bottleneck`` convolution, then the decoder
doubles the resolution ``log2(stride of C5)`` times with transposed convolutions (kernel 4,
stride 2, padding 1: exactly 2x, ``layers.ConvTranspose``) and ReLUs, halving the channels
each time (not below ``min_channels``), and a 3 x 3 convolution with a sigmoid gives the
reconstruction in [0, 1].
"""

from __future__ import annotations

import math
from typing import Any

import chex
import flax.linen as nn
import jax

from jaxvision.models.layers import ConvTranspose
from jaxvision.models.resnet import build_backbone


class Autoencoder(nn.Module):
  """``__call__(images [B, H, W, C], train) -> {"pooled": [B, D], "code": [B, h, w,
  bottleneck], "reconstruction": [B, H, W, out_channels] in [0, 1]}``.

  Attributes:
    backbone: a preset of ``jaxvision.models.resnet.BACKBONES`` (the encoder).
    backbone_kwargs: its overrides.
    bottleneck: channels of the code (the C5 map after a 1 x 1 convolution).
    decoder_channels: channels of the first upsampling stage.
    min_channels: the decoder's channels never fall below this.
    out_channels: channels of the reconstruction (the image's).
  """
  backbone: str = "resnet_tiny"
  backbone_kwargs: Any = None
  bottleneck: int = 32
  decoder_channels: int = 128
  min_channels: int = 16
  out_channels: int = 3

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
    chex.assert_rank(images, 4)
    encoder = build_backbone(self.backbone, **dict(self.backbone_kwargs or {}), name="backbone")
    stride = encoder.strides["C5"]
    if images.shape[1] % stride or images.shape[2] % stride:
      raise ValueError(f"The autoencoder's images must be a multiple of the encoder's stride "
                       f"{stride} on each side; got {images.shape[1:3]}. Change "
                       "data.image_size or the backbone's stem.")
    features = encoder(images, train)
    code = nn.Conv(self.bottleneck, (1, 1), name="bottleneck")(features["C5"])
    x = code
    for i in range(int(math.log2(stride))):
      channels = max(self.decoder_channels // 2**i, self.min_channels)
      x = nn.relu(ConvTranspose(channels, 4, strides=2, padding=1, name=f"up{i + 1}")(x))
    x = nn.Conv(self.out_channels, (3, 3), padding=1, name="output")(x)
    return {"pooled": features["pooled"], "code": code, "reconstruction": nn.sigmoid(x)}
