"""Random inputs shared by the model tests (imported by name: tests/models is on sys.path)."""

import numpy as np


def random_boxes(rng: np.random.Generator, count: int, size: float, max_side: float = 48.0
                 ) -> np.ndarray:
  """``[count, 4]`` float32 ``(x1, y1, x2, y2)`` boxes: top-left corners in ``[-8, size)``
  (some poke out of the image), sides in ``[1, max_side)``."""
  top_left = rng.uniform(-8, size, (count, 2))
  sides = rng.uniform(1, max_side, (count, 2))
  return np.concatenate([top_left, top_left + sides], 1).astype(np.float32)
