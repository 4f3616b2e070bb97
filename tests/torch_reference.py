"""Import torchvision / timm as references for parity tests and golden-output scripts.

The parity tests need only torchvision's pure-Python models (and timm's). A torchvision
wheel whose compiled ops do not match the installed torch (a CUDA wheel beside a CPU torch)
fails at import while registering fake kernels for those ops; the models themselves do not
need them, so on that one failure the import is retried with the fake-kernel registration of
missing operators skipped. Anything else that goes wrong is left alone.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest


def _drop_modules(prefix: str) -> None:
  for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
    del sys.modules[name]


def import_torchvision() -> types.ModuleType:
  """torchvision, or a pytest skip when it (or torch) is not installed."""
  torch = pytest.importorskip("torch")
  try:
    return importlib.import_module("torchvision")
  except ImportError as e:
    pytest.skip(f"torchvision is not installed: {e}")
  except RuntimeError as e:
    if "does not exist" not in str(e):
      raise
  _drop_modules("torchvision")
  register_fake = torch.library.register_fake

  def register_fake_if_present(op, *args, **kwargs):
    namespace, _, name = op.partition("::") if isinstance(op, str) else ("", "", "")
    if namespace and not hasattr(getattr(torch.ops, namespace), name):
      return lambda fn: fn  # the operator's kernel is not loaded; nothing to fake
    return register_fake(op, *args, **kwargs)

  torch.library.register_fake = register_fake_if_present
  try:
    return importlib.import_module("torchvision")
  finally:
    torch.library.register_fake = register_fake


def import_timm() -> types.ModuleType:
  """timm (which imports torchvision), or a pytest skip when it is not installed."""
  import_torchvision()
  return pytest.importorskip("timm")
