"""Writes pretrained_golden.npz and pretrained_reader_fixture.pth for test_pretrained.py.

CI has no torch, so ``test_pretrained.py`` checks the torchvision -> Flax weight conversion
against torchvision's own features saved here: random ResNet-18 and ResNet-50 weights made
with numpy (``random_state_dict``: torchvision's names and shapes, reproducible without
torch), loaded into torchvision (strictly: every name and shape must be torchvision's), run
in eval mode on a fixed 1x3x64x64 input; ``layer1..layer4`` outputs are saved as
``resnet{depth}/C{2..5}`` (NHWC float32). The ``.pth`` fixture is a small ``torch.save``d
checkpoint (strided views, half, bfloat16 and integer tensors, a parameter, a wrapped state
dict) for the torch-free reader; ``reader_fixture_arrays`` makes its values.

After changing anything here, regenerate (CPU torch; torchvision from /opt/tv here) and
commit both files:

  pip install torch==2.13.0 torchvision==0.28.0
  PYTHONPATH=/opt/tv python tests/models/make_pretrained_golden.py
"""

import collections
import pathlib
import sys

import numpy as np

GOLDEN_PATH = pathlib.Path(__file__).with_name("pretrained_golden.npz")
FIXTURE_PATH = pathlib.Path(__file__).with_name("pretrained_reader_fixture.pth")
GOLDEN_DEPTHS = (18, 50)
GOLDEN_SEED = 0
INPUT_SHAPE = (1, 3, 64, 64)  # NCHW, as torchvision takes it

# torchvision's resnet{depth}: blocks per stage and block kind. Written out here rather than
# taken from jaxvision, so that the test does not check the converter against itself.
_ARCHITECTURES = {18: ((2, 2, 2, 2), "basic"), 34: ((3, 4, 6, 3), "basic"),
                  50: ((3, 4, 6, 3), "bottleneck"), 101: ((3, 4, 23, 3), "bottleneck")}


def torchvision_shapes(depth: int) -> dict[str, tuple[int, ...]]:
  """``{name: shape}`` of torchvision's ``resnet{depth}().state_dict()``, in its order."""
  stage_sizes, block = _ARCHITECTURES[depth]
  shapes: dict[str, tuple[int, ...]] = {}

  def bn(prefix, channels):
    for name in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{prefix}.{name}"] = (channels,)
    shapes[f"{prefix}.num_batches_tracked"] = ()

  shapes["conv1.weight"] = (64, 3, 7, 7)
  bn("bn1", 64)
  expansion = 1 if block == "basic" else 4
  inplanes = 64
  for i, blocks in enumerate(stage_sizes):
    planes = 64 * 2**i
    for j in range(blocks):
      prefix = f"layer{i + 1}.{j}"
      if block == "basic":
        convs = [(planes, inplanes, 3, 3), (planes, planes, 3, 3)]
      else:
        convs = [(planes, inplanes, 1, 1), (planes, planes, 3, 3),
                 (planes * 4, planes, 1, 1)]
      for k, shape in enumerate(convs):
        shapes[f"{prefix}.conv{k + 1}.weight"] = shape
        bn(f"{prefix}.bn{k + 1}", shape[0])
      if j == 0 and (i > 0 or inplanes != planes * expansion):
        shapes[f"{prefix}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
        bn(f"{prefix}.downsample.1", planes * expansion)
      inplanes = planes * expansion
  shapes["fc.weight"] = (1000, 512 * expansion)
  shapes["fc.bias"] = (1000,)
  return shapes


def random_state_dict(depth: int, seed: int = GOLDEN_SEED) -> dict[str, np.ndarray]:
  """A torchvision ``resnet{depth}`` state dict of random numpy arrays.

  Convolutions: He-normal over fan-out (torchvision's init); BatchNorm: scale in [0.5, 1.5],
  bias and running mean ~ N(0, 0.1), running variance in [0.5, 1.5] (positive), so every
  statistic matters in eval mode and no feature map is all zero.
  """
  rng = np.random.default_rng(seed)
  state = {}
  for name, shape in torchvision_shapes(depth).items():
    leaf = name.rpartition(".")[2]
    if name.endswith("num_batches_tracked"):
      value = np.asarray(0, np.int64)
    elif len(shape) == 4:
      value = rng.normal(0, np.sqrt(2 / (shape[0] * shape[2] * shape[3])), shape)
    elif name.startswith("fc."):
      value = rng.normal(0, 0.01, shape)
    elif leaf in ("weight", "running_var"):
      value = rng.uniform(0.5, 1.5, shape)
    else:  # bias, running_mean
      value = rng.normal(0, 0.1, shape)
    state[name] = np.asarray(value, np.int64 if value.dtype == np.int64 else np.float32)
  return state


def random_input(seed: int = GOLDEN_SEED) -> np.ndarray:
  """The fixed NCHW float32 input (already normalized, as the backbone receives it)."""
  return np.random.default_rng(seed + 1).normal(size=INPUT_SHAPE).astype(np.float32)


def torchvision_features(torchvision, depth: int, state_dict: dict[str, np.ndarray],
                         images: np.ndarray) -> dict[str, np.ndarray]:
  """torchvision's ``layer1..layer4`` outputs (eval mode) as NHWC ``C2..C5``."""
  import torch

  model = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
  model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()},
                        strict=True)
  with torch.no_grad():
    x = model.maxpool(model.relu(model.bn1(model.conv1(torch.from_numpy(images)))))
    features = {}
    for k, layer in enumerate((model.layer1, model.layer2, model.layer3, model.layer4)):
      x = layer(x)
      features[f"C{k + 2}"] = x.permute(0, 2, 3, 1).numpy().copy()
  return features


def reader_fixture_arrays() -> dict[str, np.ndarray]:
  """The values of the reader fixture's tensors (bfloat16 ones exactly representable)."""
  rng = np.random.default_rng(GOLDEN_SEED + 2)
  return {
      "float32": rng.normal(size=(2, 3)).astype(np.float32),
      "transposed": rng.normal(size=(4, 3)).astype(np.float32),  # saved as a .t() view
      "offset": rng.normal(size=(4, 5)).astype(np.float32),  # saved as its [1:, 2:] view
      "conv.weight": rng.normal(size=(4, 3, 2, 2)).astype(np.float32),  # an nn.Parameter
      "half": rng.normal(size=(3,)).astype(np.float16),
      "bfloat16": (rng.integers(-64, 64, size=(5,)) / 8).astype(np.float32),
      "bn.num_batches_tracked": np.asarray(7, np.int64),
  }


def expected_fixture_state_dict() -> dict[str, np.ndarray]:
  """What the reader returns from the fixture (views applied, floats as float32)."""
  a = reader_fixture_arrays()
  return {"float32": a["float32"], "transposed": a["transposed"].T,
          "offset": a["offset"][1:, 2:], "conv.weight": a["conv.weight"],
          "half": a["half"].astype(np.float32), "bfloat16": a["bfloat16"],
          "bn.num_batches_tracked": a["bn.num_batches_tracked"]}


def write_reader_fixture(path) -> None:
  import torch

  a = {k: torch.from_numpy(v) for k, v in reader_fixture_arrays().items()}
  state = collections.OrderedDict(
      [("float32", a["float32"]), ("transposed", a["transposed"].t()),
       ("offset", a["offset"][1:, 2:]), ("conv.weight", torch.nn.Parameter(a["conv.weight"])),
       ("half", a["half"]), ("bfloat16", a["bfloat16"].to(torch.bfloat16)),
       ("bn.num_batches_tracked", a["bn.num_batches_tracked"])])
  assert not state["transposed"].is_contiguous() and state["offset"].storage_offset() > 0
  torch.save({"state_dict": state, "epoch": 3}, path)


def main():
  sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))
  from torch_reference import import_torchvision

  torchvision = import_torchvision()
  arrays = {}
  for depth in GOLDEN_DEPTHS:
    features = torchvision_features(torchvision, depth, random_state_dict(depth),
                                    random_input())
    arrays.update({f"resnet{depth}/{k}": v for k, v in features.items()})
  np.savez_compressed(GOLDEN_PATH, **arrays)
  write_reader_fixture(FIXTURE_PATH)
  print(f"wrote {GOLDEN_PATH} ({GOLDEN_PATH.stat().st_size} bytes) and {FIXTURE_PATH} "
        f"({FIXTURE_PATH.stat().st_size} bytes)")


if __name__ == "__main__":
  main()
