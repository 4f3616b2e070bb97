"""Flax Linen modules: backbones, FPN, heads and detectors (they import only ``jaxvision.ops``)."""
