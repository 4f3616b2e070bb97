"""ConvTranspose layer: parameters and output against ops.conv_transpose."""

import chex
import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxvision import ops
from jaxvision.models.layers import ConvTranspose


def test_conv_transpose_layer_applies_the_op_with_its_parameters():
  layer = ConvTranspose(features=4, kernel_size=(3, 2), strides=2, padding=(1, 0),
                        output_padding=1, bias_init=nn.initializers.normal(1.0))
  x = np.random.default_rng(0).standard_normal((2, 5, 6, 3)).astype(np.float32)
  variables = layer.init(jax.random.key(0), x)
  params = variables["params"]
  chex.assert_shape(params["kernel"], (3, 2, 3, 4))  # [kh, kw, C_in, C_out]
  chex.assert_shape(params["bias"], (4,))
  assert np.abs(params["bias"]).sum() > 0  # so the comparison below checks the bias
  y = jax.jit(layer.apply)(variables, x)
  chex.assert_shape(y, (2, 10, 13, 4))  # (5 - 1) * 2 - 2 + 3 + 1, (6 - 1) * 2 + 2 + 1
  expected = ops.conv_transpose(x, params["kernel"], 2, (1, 0), 1) + params["bias"]
  np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def test_conv_transpose_layer_without_bias_uses_kernel_init():
  layer = ConvTranspose(features=2, kernel_size=4, strides=2, padding=1, use_bias=False,
                        kernel_init=nn.initializers.ones)
  x = np.ones((1, 3, 3, 5), np.float32)
  variables = layer.init(jax.random.key(0), x)
  assert set(variables["params"]) == {"kernel"}
  np.testing.assert_array_equal(variables["params"]["kernel"], np.ones((4, 4, 5, 2)))
  y = layer.apply(variables, x)
  chex.assert_shape(y, (1, 6, 6, 2))  # kernel 4, stride 2, padding 1: exactly 2x
  np.testing.assert_allclose(y, ops.conv_transpose(x, np.ones((4, 4, 5, 2)), 2, 1),
                             rtol=1e-6)


def test_conv_transpose_layer_rejects_a_bad_kernel_size():
  with pytest.raises(ValueError, match="kernel_size"):
    ConvTranspose(features=2, kernel_size=(3, 3, 3)).init(jax.random.key(0),
                                                          np.ones((1, 4, 4, 1), np.float32))
