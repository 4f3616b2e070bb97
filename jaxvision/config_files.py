"""Loading experiment configs by path.

``configs/`` is a directory of scripts, not a package: ``jaxvision.train --config PATH``
loads a file by its path, from any working directory. A config built on another (Mask R-CNN
on Faster R-CNN's settings) loads its base the same way, with :func:`sibling`, instead of
copying it or relying on the working directory being the repository root.
"""

from __future__ import annotations

import importlib.util
import os
import types


def load_module(path: str) -> types.ModuleType:
  """The config file at ``path`` as a fresh module (not registered in ``sys.modules``)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No config file {path!r}.")
  name = "_jaxvision_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling(config_file: str, name: str) -> types.ModuleType:
  """The config ``name`` (e.g. ``"faster_rcnn_shapes"``) in the directory of ``config_file``
  (pass ``__file__``)."""
  return load_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py"))


def load_config(spec: str):
  """``path/to/config.py[:variant]`` -> ``get_config(variant)`` (``None`` without one)."""
  path, _, variant = spec.partition(":")
  return load_module(path).get_config(variant or None)
