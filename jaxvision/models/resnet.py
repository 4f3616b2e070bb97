"""ResNet backbones (v1.5) returning named multi-scale features.

Every head in jaxvision (classification, box regression, FPN, masks, segmentation)
attaches to the same backbone output: a dict ``{"C2", "C3", "C4", "C5", "pooled"}`` where
``Ck`` is the NHWC output of stage ``k`` (stride ``2**k`` with the ImageNet stem) and
``pooled`` is the global average of ``C5``.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import pickle
import re
import struct
import zipfile
from typing import Any, Mapping, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


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


def _residual(x: jax.Array, y: jax.Array, filters: int, strides: int, norm,
              dtype: Any = jnp.float32) -> jax.Array:
  """``relu(shortcut(x) + y)``; a 1x1 projection (``proj``, ``proj_norm``) when shapes differ.

  Called inside a block's compact ``__call__``, so the projection belongs to that block.
  """
  if x.shape != y.shape:
    x = nn.Conv(filters, (1, 1), strides, use_bias=False, dtype=dtype, name="proj")(x)
    x = norm(name="proj_norm")(x)
  return nn.relu(x + y)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""
  filters: int
  strides: int
  norm: str = "batch"
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = make_norm(self.norm, train, self.dtype)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    y = conv(self.filters, (3, 3), self.strides, padding=1)(x)
    y = nn.relu(norm()(y))
    y = conv(self.filters, (3, 3), padding=1)(y)
    # Zero-init of the last norm's scale makes each block start as the identity.
    y = norm(scale_init=nn.initializers.zeros)(y)
    return _residual(x, y, self.filters, self.strides, norm, self.dtype)


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 (strided, v1.5) -> 1x1 with 4x expansion (ResNet-50 and deeper)."""
  filters: int
  strides: int
  norm: str = "batch"
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = make_norm(self.norm, train, self.dtype)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    y = conv(self.filters, (1, 1))(x)
    y = nn.relu(norm()(y))
    y = conv(self.filters, (3, 3), self.strides, padding=1)(y)
    y = nn.relu(norm()(y))
    y = conv(self.filters * 4, (1, 1))(y)
    y = norm(scale_init=nn.initializers.zeros)(y)
    return _residual(x, y, self.filters * 4, self.strides, norm, self.dtype)


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
    dtype: compute dtype (``jnp.bfloat16`` for mixed precision); parameters and BatchNorm
      statistics stay float32.
  """
  stage_sizes: Sequence[int]
  block: str = "basic"
  width: int = 64
  stem: str = "imagenet"
  norm: str = "batch"
  dtype: Any = jnp.float32

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
    norm = make_norm(self.norm, train, self.dtype)
    if self.stem == "imagenet":
      x = nn.Conv(self.width, (7, 7), 2, padding=3, use_bias=False, dtype=self.dtype,
                  name="stem_conv")(images)
      x = nn.relu(norm(name="stem_norm")(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    elif self.stem in ("stride2", "small"):
      stride = 2 if self.stem == "stride2" else 1
      x = nn.Conv(self.width, (3, 3), stride, padding=1, use_bias=False, dtype=self.dtype,
                  name="stem_conv")(images)
      x = nn.relu(norm(name="stem_norm")(x))
    else:
      raise ValueError(f"Unknown ResNet stem {self.stem!r}; use 'imagenet', 'stride2' or 'small'.")
    features = {}
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = block(self.width * 2**i, strides, self.norm, self.dtype,
                  name=f"stage{i + 1}_block{j + 1}")(x, train)
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


# --- Pretrained weights: torchvision and timm ResNets ---------------------------------------
# torchvision's ResNet-18/34/50/101 (and timm's ``resnet18/34/50/101``, which use the same
# state-dict names) are this module's ``resnet18/34/50/101`` presets with the ImageNet stem:
# a 7x7/2 convolution with symmetric padding 3, a 3x3/2 max-pool with padding 1, the stride
# of a bottleneck on its 3x3 convolution (v1.5), BatchNorm with epsilon 1e-5, stage widths
# 64..512 (times 4 for bottlenecks), and a 1x1 strided projection ("downsample") wherever a
# block changes shape. The conversion below only renames and transposes.

# depth -> (blocks per stage, block kind).
TORCHVISION_RESNETS = {
    18: ((2, 2, 2, 2), "basic"),
    34: ((3, 4, 6, 3), "basic"),
    50: ((3, 4, 6, 3), "bottleneck"),
    101: ((3, 4, 23, 3), "bottleneck"),
}
_TORCH_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
# Entries of a torchvision/timm state dict that the backbone does not hold: the ImageNet
# classifier and BatchNorm's step counters.
_IGNORED = re.compile(r"^fc\.(weight|bias)$|\.num_batches_tracked$")


def _torchvision_names(depth: int) -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
  """``{torch key: (collection, our path, torch shape)}`` for a ResNet of ``depth``."""
  stage_sizes, block = TORCHVISION_RESNETS[depth]
  names = {}

  def conv(key, path, out_channels, in_channels, size):
    names[key] = ("params", path + ("kernel",), (out_channels, in_channels, size, size))

  def batch_norm(key, path, channels):
    for suffix, (collection, leaf) in _TORCH_BN.items():
      names[f"{key}.{suffix}"] = (collection, path + (leaf,), (channels,))

  conv("conv1.weight", ("stem_conv",), 64, 3, 7)
  batch_norm("bn1", ("stem_norm",), 64)
  expansion = 4 if block == "bottleneck" else 1
  in_channels = 64
  for i, num_blocks in enumerate(stage_sizes):
    width = 64 * 2**i
    for j in range(num_blocks):
      torch_block, ours = f"layer{i + 1}.{j}", (f"stage{i + 1}_block{j + 1}",)
      if block == "basic":
        convs = [(width, in_channels, 3), (width, width, 3)]
      else:
        convs = [(width, in_channels, 1), (width, width, 3), (width * expansion, width, 1)]
      for k, (out_c, in_c, size) in enumerate(convs):
        conv(f"{torch_block}.conv{k + 1}.weight", ours + (f"Conv_{k}",), out_c, in_c, size)
        batch_norm(f"{torch_block}.bn{k + 1}", ours + (f"BatchNorm_{k}",), out_c)
      if j == 0 and (i > 0 or in_channels != width * expansion):
        conv(f"{torch_block}.downsample.0.weight", ours + ("proj",), width * expansion,
             in_channels, 1)
        batch_norm(f"{torch_block}.downsample.1", ours + ("proj_norm",), width * expansion)
      in_channels = width * expansion
  return names


def _architecture(state_dict: Mapping[str, Any]) -> tuple[tuple[int, ...], str]:
  """Blocks per stage (``layer1..layer4``) and block kind of a torchvision-named ResNet."""
  counts = []
  for i in range(1, 5):
    blocks = {int(m.group(1)) for key in state_dict
              if (m := re.match(rf"layer{i}\.(\d+)\.", key))}
    counts.append(max(blocks) + 1 if blocks else 0)
  return tuple(counts), "bottleneck" if any(".conv3." in k for k in state_dict) else "basic"


def torchvision_depth(state_dict: Mapping[str, Any]) -> int:
  """The depth (18/34/50/101) of a torchvision/timm ResNet state dict, read from its block
  counts and block kind; a ValueError when it is none of those."""
  architecture = _architecture(state_dict)
  for depth, known in TORCHVISION_RESNETS.items():
    if architecture == known:
      return depth
  raise ValueError(f"Not a torchvision/timm ResNet-18/34/50/101 state dict: it has "
                   f"{architecture[1]} blocks {architecture[0]} in layer1..layer4 "
                   f"(first entries: {list(state_dict)[:4]}).")


def convert_torchvision_state_dict(state_dict: Mapping[str, np.ndarray], depth: int
                                   ) -> dict[str, Any]:
  """A torchvision (or timm) ResNet state dict -> the variables of our ``resnet{depth}``.

  Torch-free: ``state_dict`` maps torchvision's names (``conv1.weight``, ``bn1.running_var``,
  ``layer2.0.downsample.0.weight``, ...) to arrays (numpy, or anything ``np.asarray``
  takes). Convolution kernels go from OIHW to HWIO (our activations are NHWC); BatchNorm's
  ``weight, bias, running_mean, running_var`` become ``scale, bias`` (params) and
  ``mean, var`` (batch_stats); ``layer{i}.{j}`` becomes ``stage{i}_block{j+1}`` and a block's
  ``downsample`` its ``proj``/``proj_norm``. The classifier ``fc`` and the
  ``num_batches_tracked`` counters are dropped. Returns float32 numpy
  ``{"params": ..., "batch_stats": ...}`` for ``build_backbone(f"resnet{depth}")`` (with
  the default ImageNet stem and norm ``batch`` or ``frozen``).

  Raises a ValueError for an unsupported depth, a state dict of another depth, missing or
  unexpected entries (named), or an entry whose shape differs (named, with both shapes).
  """
  if depth not in TORCHVISION_RESNETS:
    raise ValueError(f"Unsupported ResNet depth {depth!r}; torchvision/timm weights can be "
                     f"loaded for depths {sorted(TORCHVISION_RESNETS)}.")
  names = _torchvision_names(depth)
  keys = {k for k in state_dict if not _IGNORED.search(k)}
  missing = sorted(set(names) - keys)
  unexpected = sorted(keys - set(names))
  if missing or unexpected:
    found = {architecture: d for d, architecture in TORCHVISION_RESNETS.items()}.get(
        _architecture(state_dict))
    if found is not None and found != depth:
      raise ValueError(f"The state dict holds a ResNet-{found}, not a ResNet-{depth}; load it "
                       f"with depth={found} (and model.backbone='resnet{found}').")
    raise ValueError(
        f"The state dict is not a torchvision/timm ResNet-{depth}: {len(missing)} entries "
        f"missing {missing[:8]}, {len(unexpected)} unexpected {unexpected[:8]}.")
  variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
  for key, (collection, path, shape) in names.items():
    value = np.asarray(state_dict[key], dtype=np.float32)
    if value.shape != shape:
      raise ValueError(f"State dict entry {key!r} has shape {value.shape}, but a "
                       f"ResNet-{depth} needs {shape}.")
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    node = variables[collection]
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = np.ascontiguousarray(value)
  return variables


# Storage classes of torch's pickles -> numpy dtypes (bfloat16 through ml_dtypes, a jax
# dependency).
_TORCH_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": jnp.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """``torch._utils._rebuild_tensor_v2`` for numpy: a (strided) view of a storage, copied."""
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=tuple(size),
                                         strides=tuple(s * itemsize for s in stride))
  return np.array(view)


class _TorchZipUnpickler(pickle.Unpickler):
  """Reads ``data.pkl`` of torch's zip format, building numpy arrays for tensors.

  Only the globals a state dict needs are allowed (like ``torch.load(weights_only=True)``);
  anything else is refused, so an untrusted file runs no code.
  """

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str):
    super().__init__(file)
    self._archive, self._prefix, self._path = archive, prefix, path
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module, name):
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild_tensor
    if module == "torch._utils" and name == "_rebuild_parameter":
      return lambda data, *unused: data
    if module == "torch" and name in _TORCH_STORAGES:
      return name
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    raise pickle.UnpicklingError(
        f"{self._path} needs {module}.{name}, which the torch-free reader does not support "
        "(it reads state dicts of tensors); install torch to load it.")

  def persistent_load(self, pid):
    kind, storage_type, key, unused_location, numel = pid
    if kind != "storage" or storage_type not in _TORCH_STORAGES:
      raise pickle.UnpicklingError(f"{self._path}: unsupported storage {pid!r}; install torch.")
    if key not in self._storages:
      data = self._archive.read(f"{self._prefix}/data/{key}")
      self._storages[key] = np.frombuffer(data, _TORCH_STORAGES[storage_type], count=numel)
    return self._storages[key]


def read_torch_zip(path: str) -> dict[str, Any]:
  """The object ``torch.save`` wrote to ``path`` (zip format, torch >= 1.6), with numpy
  arrays for tensors; torch-free. Reads state dicts (nested dicts of tensors and numbers)."""
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path} is not in torch's zip format (a file saved by torch < 1.6?); "
                     "install torch to read it, or re-save it with a recent torch.")
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if not pickles:
      raise ValueError(f"{path} is a zip file but not a torch checkpoint (no data.pkl).")
    prefix = pickles[0].rpartition("/")[0]
    byteorder = f"{prefix}/byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
      raise ValueError(f"{path} was saved on a big-endian machine; install torch to read it.")
    with archive.open(pickles[0]) as file:
      return _TorchZipUnpickler(file, archive, prefix, path).load()


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": jnp.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """A ``.safetensors`` file (timm's weights on the Hugging Face hub) as numpy arrays.

  The format: an 8-byte little-endian header length, a JSON header mapping each name to
  its ``dtype``, ``shape`` and ``data_offsets`` into the bytes that follow.
  """
  with open(path, "rb") as f:
    (length,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(length))
    data = f.read()
  arrays = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which the reader "
                       f"does not support ({sorted(_SAFETENSORS_DTYPES)}).")
    begin, end = info["data_offsets"]
    arrays[name] = np.frombuffer(data[begin:end], _SAFETENSORS_DTYPES[info["dtype"]]).reshape(
        info["shape"]).copy()
  return arrays


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A torch checkpoint's state dict (or a ``.safetensors`` file's tensors) as numpy arrays.

  With torch installed, ``torch.load(weights_only=True)`` reads a torch file (every torch
  format); without, :func:`read_torch_zip` does (the zip format of torch >= 1.6). A
  checkpoint that wraps its state dict (``{"state_dict": ...}`` or ``{"model": ...}``, as
  training scripts save them) is unwrapped.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No weights file at {path!r}.")
  if path.endswith(".safetensors"):
    loaded = read_safetensors(path)
  else:
    loaded = _read_torch_file(path)
  if not isinstance(loaded, Mapping):
    raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict.")
  # Half and bfloat16 checkpoints give float32 arrays, whichever reader read them.
  return {k: v.astype(np.float32) if isinstance(v, np.ndarray) and jnp.issubdtype(
      v.dtype, jnp.floating) else v for k, v in loaded.items()}


def _read_torch_file(path: str) -> Any:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    loaded = _unwrap(read_torch_zip(path))
  else:
    loaded = _unwrap(torch.load(path, map_location="cpu", weights_only=True))
    if isinstance(loaded, Mapping):  # numpy has no bfloat16: floats go through float32
      loaded = {k: (v.detach().float().numpy() if v.is_floating_point() else v.numpy())
                if isinstance(v, torch.Tensor) else v for k, v in loaded.items()}
  return loaded


def _unwrap(loaded: Any) -> Any:
  for key in ("state_dict", "model"):
    if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
      return loaded[key]
  return loaded


def load_torchvision_weights(path: str, depth: int) -> dict[str, Any]:
  """Variables of ``build_backbone(f"resnet{depth}")`` from a torchvision ResNet state dict.

  For notebooks::

    variables = load_torchvision_weights("resnet50-11ad3fa6.pth", 50)
    features = build_backbone("resnet50").apply(variables, images, train=False)

  ``images`` NHWC, normalized as torchvision's were: ``(x / 255 - mean) / std`` with
  ImageNet's :data:`IMAGENET_MEAN` and :data:`IMAGENET_STD`. timm's ``resnet18/34/50/101``
  state dicts have the same names and load the same way. ``depth`` is 18, 34, 50 or 101;
  see :func:`convert_torchvision_state_dict` for the conversion and its errors.
  """
  return convert_torchvision_state_dict(read_state_dict(path), depth)


# The normalization torchvision's and timm's ImageNet ResNets were trained with, on [0, 1]
# pixels (``data.mean``/``data.std`` in a config).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
