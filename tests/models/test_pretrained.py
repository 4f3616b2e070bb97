"""torchvision / timm ResNet weights -> the Flax backbone (``init_from="torchvision:..."``).

Parity with torchvision twice: against the features saved by ``make_pretrained_golden.py``
(runs without torch: the weights are numpy, the same here and there), and, where torchvision
is installed (``PYTHONPATH=/opt/tv`` here), against torchvision itself on fresh random
weights read back from a ``.pth``. C2..C5 must equal torchvision's ``layer1..layer4``
outputs in eval mode to 1e-4 relative: ``|ours - theirs| <= 1e-4 * (|theirs| + max|theirs|)``
per feature map (the max term because ReLU outputs near zero have no relative scale; the
measured error is ~2e-6 of the max for ResNet-50).
"""

import json
import struct

import numpy as np
import pytest

import jax
import make_pretrained_golden as golden
from jaxvision import checkpoint, trainer
from jaxvision.models import resnet
from jaxvision.tasks import get_task
from torch_reference import import_timm, import_torchvision

import configs.faster_rcnn_shapes as faster_rcnn_shapes

FEATURES = ("C2", "C3", "C4", "C5")


def assert_features_close(ours, theirs, what):
  for name in FEATURES:
    reference = np.asarray(theirs[name])
    np.testing.assert_allclose(np.asarray(ours[name]), reference, rtol=1e-4,
                               atol=1e-4 * np.abs(reference).max(), err_msg=f"{what} {name}")


def backbone_features(variables, depth, images_nchw):
  model = resnet.build_backbone(f"resnet{depth}")
  return model.apply(variables, np.transpose(images_nchw, (0, 2, 3, 1)), train=False)


@pytest.fixture(scope="module")
def saved():
  with np.load(golden.GOLDEN_PATH) as arrays:
    return dict(arrays)


def test_golden_file_holds_every_case(saved):
  expected = {f"resnet{d}/{k}" for d in golden.GOLDEN_DEPTHS for k in FEATURES}
  assert set(saved) == expected, "stale golden file: run tests/models/make_pretrained_golden.py"
  assert golden.GOLDEN_PATH.stat().st_size < 1_000_000


@pytest.mark.parametrize("depth", golden.GOLDEN_DEPTHS)
def test_converted_numpy_weights_match_torchvision_golden(saved, depth):
  variables = resnet.convert_torchvision_state_dict(golden.random_state_dict(depth), depth)
  features = backbone_features(variables, depth, golden.random_input())
  assert_features_close(features, {k: saved[f"resnet{depth}/{k}"] for k in FEATURES},
                        f"resnet{depth}")


def _randomize_batch_norms(torch, model):
  """torchvision initializes BatchNorm to the identity; random statistics make them count."""
  generator = torch.Generator().manual_seed(1)
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      with torch.no_grad():
        module.weight.uniform_(0.5, 1.5, generator=generator)
        module.bias.normal_(0, 0.1, generator=generator)
        module.running_mean.normal_(0, 0.1, generator=generator)
        module.running_var.uniform_(0.5, 1.5, generator=generator)
  return model.eval()


def _torch_features(torch, model, images):
  with torch.no_grad():
    x = torch.from_numpy(images)
    x = model.maxpool((getattr(model, "act1", None) or model.relu)(model.bn1(model.conv1(x))))
    features = {}
    for k in range(4):
      x = getattr(model, f"layer{k + 1}")(x)
      features[f"C{k + 2}"] = x.permute(0, 2, 3, 1).numpy()
  return features


@pytest.mark.parametrize("depth", [18, 50])
def test_parity_with_torchvision_from_pth(tmp_path, depth):
  torchvision = import_torchvision()
  import torch

  torch.manual_seed(depth)
  model = _randomize_batch_norms(torch, getattr(torchvision.models, f"resnet{depth}")())
  path = str(tmp_path / f"resnet{depth}.pth")
  torch.save(model.state_dict(), path)
  images = np.random.default_rng(depth).normal(size=(2, 3, 64, 64)).astype(np.float32)
  variables = resnet.load_torchvision_weights(path, depth)
  assert_features_close(backbone_features(variables, depth, images),
                        _torch_features(torch, model, images), f"resnet{depth}")
  # The torch-free reader reads the same file to the same arrays.
  torch_free = resnet.read_torch_zip(path)
  reference = torch.load(path, weights_only=True)
  assert set(torch_free) == set(reference)
  for key, value in reference.items():
    np.testing.assert_array_equal(torch_free[key], value.numpy(), err_msg=key)


def test_timm_resnet_loads_through_init_from(tmp_path):
  timm = import_timm()
  import torch

  torch.manual_seed(0)
  model = _randomize_batch_norms(torch, timm.create_model("resnet18", pretrained=False))
  path = str(tmp_path / "timm_resnet18.pth")
  torch.save(model.state_dict(), path)
  config = _detector_config(f"timm:{path}")
  variables = checkpoint.load_pretrained(config)
  images = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
  assert_features_close(backbone_features(variables, 18, images),
                        _torch_features(torch, model, images), "timm resnet18")


def test_torch_free_reader_reads_the_fixture():
  expected = golden.expected_fixture_state_dict()
  loaded = resnet.read_torch_zip(str(golden.FIXTURE_PATH))
  assert set(loaded) == {"state_dict", "epoch"} and loaded["epoch"] == 3
  state = loaded["state_dict"]
  assert list(state) == list(expected)
  assert state["half"].dtype == np.float16 and state["bfloat16"].dtype == jax.numpy.bfloat16
  assert state["bn.num_batches_tracked"].dtype == np.int64
  for key, value in expected.items():
    np.testing.assert_array_equal(np.asarray(state[key], value.dtype), value, err_msg=key)
  # read_state_dict (torch.load where torch is installed) unwraps and gives float32.
  state = resnet.read_state_dict(str(golden.FIXTURE_PATH))
  for key, value in expected.items():
    assert state[key].dtype == value.dtype, key
    np.testing.assert_array_equal(state[key], value, err_msg=key)


def _write_safetensors(path, arrays, metadata):
  """The safetensors layout, written by hand: u64 header length, JSON header, raw bytes."""
  names = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
           np.dtype(np.int64): "I64", np.dtype(jax.numpy.bfloat16): "BF16"}
  header, offset = {"__metadata__": metadata}, 0
  for name, value in arrays.items():
    header[name] = {"dtype": names[value.dtype], "shape": list(value.shape),
                    "data_offsets": [offset, offset + value.nbytes]}
    offset += value.nbytes
  encoded = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(encoded)) + encoded)
    for value in arrays.values():
      f.write(np.ascontiguousarray(value).tobytes())


def test_safetensors_reader_reads_the_format(tmp_path):
  """timm's hub weights come as .safetensors; read torch-free, floats as float32."""
  state = golden.random_state_dict(18)
  state["layer1.0.bn1.weight"] = state["layer1.0.bn1.weight"].astype(jax.numpy.bfloat16)
  state["layer1.0.bn2.bias"] = state["layer1.0.bn2.bias"].astype(np.float16)
  path = str(tmp_path / "model.safetensors")
  _write_safetensors(path, state, {"format": "pt"})
  loaded = resnet.read_state_dict(path)
  assert set(loaded) == set(state)
  for key, value in state.items():
    assert loaded[key].dtype == (np.int64 if value.dtype == np.int64 else np.float32), key
    np.testing.assert_array_equal(loaded[key], np.asarray(value, loaded[key].dtype), key)


def test_safetensors_reader_reads_the_library_files(tmp_path):
  safetensors_numpy = pytest.importorskip("safetensors.numpy")
  reference = golden.random_state_dict(34)
  path = str(tmp_path / "model.safetensors")
  safetensors_numpy.save_file(reference, path, metadata={"format": "pt"})
  variables = resnet.load_torchvision_weights(path, 34)
  jax.tree.map(np.testing.assert_array_equal, variables,
               resnet.convert_torchvision_state_dict(reference, 34))


def test_conversion_errors_name_the_problem():
  state = golden.random_state_dict(18)
  with pytest.raises(ValueError, match=r"Unsupported ResNet depth 152.*\[18, 34, 50, 101\]"):
    resnet.convert_torchvision_state_dict(state, 152)
  with pytest.raises(ValueError, match=r"holds a ResNet-18, not a ResNet-50.*depth=18"):
    resnet.convert_torchvision_state_dict(state, 50)
  missing = dict(state)
  del missing["layer2.0.downsample.0.weight"]
  with pytest.raises(ValueError, match=r"1 entries missing \['layer2\.0\.downsample\.0\.weight'\]"):
    resnet.convert_torchvision_state_dict(missing, 18)
  with pytest.raises(ValueError, match=r"1 unexpected \['layer1\.0\.se\.weight'\]"):
    resnet.convert_torchvision_state_dict({**state, "layer1.0.se.weight": np.zeros(3)}, 18)
  wrong = {**state, "layer3.1.bn2.running_var": np.ones(128, np.float32)}
  with pytest.raises(ValueError, match=r"'layer3\.1\.bn2\.running_var' has shape \(128,\).*"
                                       r"needs \(256,\)"):
    resnet.convert_torchvision_state_dict(wrong, 18)
  with pytest.raises(ValueError, match=r"Not a torchvision/timm ResNet.*\(2, 2, 0, 0\)"):
    resnet.torchvision_depth({k: v for k, v in state.items()
                              if not k.startswith(("layer3", "layer4"))})


def _detector_config(init_from):
  config = faster_rcnn_shapes.get_config("quick")
  config.init_from = init_from
  config.model.backbone = "resnet18"
  # FrozenBatchNorm, as torchvision's detectors fine-tune: the statistics stay ImageNet's.
  config.model.backbone_kwargs.norm = "frozen"
  config.data.mean = resnet.IMAGENET_MEAN
  config.data.std = resnet.IMAGENET_STD
  return config


@pytest.fixture
def resnet18_pth(tmp_path, monkeypatch):
  """A ``.pth`` of the numpy ResNet-18 (written by torch where installed; without torch the
  reader is replaced by the numpy state dict, so the trainer path still runs in CI)."""
  state = golden.random_state_dict(18)
  path = str(tmp_path / "resnet18.pth")
  try:
    import torch
  except ImportError:
    real_read = resnet.read_state_dict
    monkeypatch.setattr(resnet, "read_state_dict",
                        lambda p: dict(state) if p == path else real_read(p))
  else:
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
  return path, state


def test_init_from_torchvision_loads_the_detector_backbone(resnet18_pth, tmp_path):
  """The trainer's transfer path on the detector's real state layout (shapes only: no
  compile), fast enough for every run; the end-to-end run is the slow test below."""
  path, state = resnet18_pth
  config = _detector_config(f"torchvision:{path}")
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
  task = get_task(config, mesh)
  batch = next(task.train_batches(0))
  abstract = jax.eval_shape(lambda: task.init_state(jax.random.key(0),
                                                    jax.tree.map(lambda x: x[:1], batch)))
  pretrained = checkpoint.load_pretrained(config)
  loaded = trainer.transfer_backbone(task, abstract, config, pretrained)
  imported = resnet.convert_torchvision_state_dict(state, 18)
  for collection in ("params", "batch_stats"):
    jax.tree.map(np.testing.assert_array_equal, imported[collection],
                 jax.device_get(loaded[collection]["backbone"]))
  # Only the backbone was replaced: the heads are still the (abstract) fresh ones.
  heads = [name for name in abstract["params"] if name != "backbone"]
  assert heads and all(loaded["params"][n] is abstract["params"][n] for n in heads)
  np.testing.assert_array_equal(loaded["params"]["backbone"]["stem_conv"]["kernel"],
                                state["conv1.weight"].transpose(2, 3, 1, 0))


@pytest.mark.slow
def test_init_from_torchvision_starts_a_detector_run_with_the_imported_backbone(
    resnet18_pth, tmp_path):
  path, state = resnet18_pth
  config = _detector_config(f"torchvision:{path}")
  config.optimizer.freeze_regex = "^backbone/"  # so the run's backbone is still the import
  config.total_steps = 1
  config.checkpoint_every = 1
  config.log_every = 1
  workdir = str(tmp_path / "run")
  # One device: the resnet18 detector's step compiles faster unpartitioned.
  trainer.train_and_evaluate(config, workdir,
                             mesh=jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",)))
  _, _, variables = checkpoint.restore_for_inference(workdir)
  imported = resnet.convert_torchvision_state_dict(state, 18)
  for collection in ("params", "batch_stats"):
    jax.tree.map(np.testing.assert_array_equal, imported[collection],
                 jax.device_get(variables[collection]["backbone"]))


def test_init_from_checks_the_config_first(resnet18_pth, tmp_path):
  path, _ = resnet18_pth
  config = _detector_config(f"torchvision:{path}")
  config.model.backbone = "resnet50"
  with pytest.raises(ValueError, match=r"holds a torchvision ResNet-18.*"
                                       r"model\.backbone='resnet50' \(use 'resnet18'\)"):
    trainer.train_and_evaluate(config, str(tmp_path / "a"))
  config = _detector_config(f"torchvision:{path}")
  config.data.mean = (0.5, 0.5, 0.5)
  with pytest.raises(ValueError, match=r"ImageNet's normalization.*data\.mean=\(0\.5, 0\.5, "
                                       r"0\.5\).*--config\.data\.mean="):
    trainer.train_and_evaluate(config, str(tmp_path / "b"))
  config = _detector_config(f"timm:{tmp_path / 'absent.pth'}")
  with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
    trainer.train_and_evaluate(config, str(tmp_path / "c"))
