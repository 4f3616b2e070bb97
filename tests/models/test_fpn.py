"""FPN: parity with torchvision's FeaturePyramidNetwork on copied weights."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from jaxvision.models.fpn import FPN, upsample_nearest

torch = pytest.importorskip("torch")
torchvision_ops = pytest.importorskip("torchvision.ops")


def _torch_conv_to_flax(conv) -> dict[str, np.ndarray]:
  return {"kernel": conv.weight.detach().numpy().transpose(2, 3, 1, 0),
          "bias": conv.bias.detach().numpy()}


@pytest.mark.parametrize("image_size", [(64, 64), (72, 40)])
def test_fpn_matches_torchvision(image_size):
  """Same outputs as torchvision for sizes divisible by 32 and not (odd upsampling)."""
  in_channels = [4, 6, 8, 10]
  rng = np.random.default_rng(0)
  features = {}
  height, width = image_size
  for k, channels in zip(range(2, 6), in_channels):
    features[f"C{k}"] = rng.normal(size=(2, height, width, channels)).astype(np.float32)
    height, width = -(-height // 2), -(-width // 2)

  torch.manual_seed(0)
  reference = torchvision_ops.FeaturePyramidNetwork(
      in_channels, 16, extra_blocks=torchvision_ops.feature_pyramid_network.LastLevelMaxPool())
  for module in reference.modules():
    if isinstance(module, torch.nn.Conv2d):
      torch.nn.init.normal_(module.bias)  # torchvision zero-inits biases: test them too
  params = {}
  for i, k in enumerate(range(2, 6)):
    params[f"lateral_P{k}"] = _torch_conv_to_flax(reference.inner_blocks[i][0])
    params[f"output_P{k}"] = _torch_conv_to_flax(reference.layer_blocks[i][0])
  with torch.no_grad():
    expected = reference({name: torch.from_numpy(x.transpose(0, 3, 1, 2))
                          for name, x in features.items()})

  outputs = jax.jit(FPN(channels=16).apply)({"params": params}, features)

  assert sorted(outputs) == ["P2", "P3", "P4", "P5", "P6"]
  for name, want in zip(["P2", "P3", "P4", "P5", "P6"], expected.values()):
    np.testing.assert_allclose(outputs[name], want.numpy().transpose(0, 2, 3, 1),
                               rtol=1e-4, atol=1e-4, err_msg=name)


def test_upsample_nearest_matches_torch_interpolate():
  x = np.arange(2 * 3 * 5 * 2, dtype=np.float32).reshape(2, 3, 5, 2)
  want = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(7, 9),
                                         mode="nearest")
  np.testing.assert_array_equal(upsample_nearest(jnp.asarray(x), (7, 9)),
                                want.numpy().transpose(0, 2, 3, 1))


def test_fpn_missing_level_raises():
  with pytest.raises(ValueError, match="C5"):
    FPN(channels=8).init(jax.random.key(0), {"C2": jnp.zeros((1, 8, 8, 4)),
                                             "C3": jnp.zeros((1, 4, 4, 4)),
                                             "C4": jnp.zeros((1, 2, 2, 4))})
