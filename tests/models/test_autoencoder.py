"""The autoencoder: shapes through the backbone's C5 code and back."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.models.autoencoder import Autoencoder


@pytest.mark.parametrize("stem,size,code", [("stride2", 32, 2), ("small", 16, 2)])
def test_reconstruction_has_the_input_shape_and_range(stem, size, code):
  model = Autoencoder(backbone="resnet_tiny", backbone_kwargs={"stem": stem}, bottleneck=4,
                      decoder_channels=16, min_channels=8, out_channels=1)
  images = jax.random.normal(jax.random.key(0), (2, size, size, 1))
  variables = model.init(jax.random.key(1), images, train=False)
  outputs = model.apply(variables, images, train=False)
  assert outputs["reconstruction"].shape == (2, size, size, 1)
  assert outputs["code"].shape == (2, code, code, 4)
  assert outputs["pooled"].shape == (2, 64)
  assert float(outputs["reconstruction"].min()) >= 0 and float(outputs["reconstruction"].max()) <= 1


def test_image_size_must_be_a_multiple_of_the_stride():
  model = Autoencoder(backbone="resnet_tiny", backbone_kwargs={"stem": "stride2"})
  with pytest.raises(ValueError, match="multiple of the encoder's stride 16"):
    model.init(jax.random.key(0), jnp.zeros((1, 24, 24, 3)), train=False)
