"""Selective search region proposals (OpenCV contrib), fixed-size for static shapes.

R-CNN and Fast R-CNN classify regions proposed by a method that knows nothing about the
classes. The one used here is selective search (Uijlings et al., 2013): a graph-based
over-segmentation of the image merged greedily by colour, texture, size and fill
similarity; every merged region's box is a proposal. The implementation is OpenCV
contrib's ``cv2.ximgproc.segmentation`` (a maintained one, not a re-implementation);
``fast`` and ``quality`` are its two published presets (``switchToSelectiveSearchFast`` /
``switchToSelectiveSearchQuality``: quality runs more colour spaces, strategies and
segmentation scales, so it is ~5-10x slower and proposes more boxes).

It runs on the host, once per image: the detection task's ``preprocess`` (in the input
pipeline's grain workers) asks a :class:`ProposalCache`, which searches an image the first
time it is seen and keeps the boxes on disk beside the dataset, so later epochs and
evaluations read them back (``jaxvision.tasks.detection``, ``data_proposals.method =
"selective_search"``).

Threads: :func:`selective_search` sets OpenCV's thread pool to one thread
(``cv2.setNumThreads(1)``, a process-wide setting) before it runs. The input pipeline
already runs one image per worker, so OpenCV's own parallel loops would only oversubscribe
the cores (workers x OpenCV threads on the same cores), and one thread makes the result
independent of the pool's scheduling.

Determinism: OpenCV ranks the merged regions by ``rand() / RAND_MAX * level`` (C's
``rand``: small, early regions first, shuffled), so the ORDER of its boxes changes from
call to call although the set does not. :func:`selective_search` seeds C's generator
(``srand``, through ctypes) with a fixed seed right before each search, under a lock held
for the whole search, so the same image always gives the same boxes in the same order (in
any thread of this process; a C library calling ``rand`` from another thread at the same
moment would break this, and none in this package does). The price: searches in one
process run one at a time; the cache makes that a one-time cost per image.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import threading

import numpy as np

MODES = ("fast", "quality")

# OpenCV's ranking seed (glibc treats srand(0) as srand(1), so 1 is its default too).
_RANK_SEED = 1

_CV2_LOCK = threading.Lock()
_CV2_THREADS_SET = False
# Serializes srand + search (C's rand state is one per process).
_SEARCH_LOCK = threading.Lock()


def _libc_srand():
  """C's ``srand`` or None where it cannot be found (the order is then not reproducible)."""
  name = ctypes.util.find_library("c")
  try:
    return ctypes.CDLL(name).srand if name else ctypes.CDLL(None).srand
  except (OSError, AttributeError):  # pragma: no cover - every POSIX libc has srand
    return None


_SRAND = _libc_srand()


def _cv2():
  """Imports OpenCV with one thread (see the module docstring) or says how to install it."""
  global _CV2_THREADS_SET
  try:
    import cv2  # pylint: disable=import-outside-toplevel
  except ImportError as e:  # pragma: no cover - a dependency of the package
    raise ImportError("Selective search needs OpenCV contrib: "
                      "pip install opencv-contrib-python-headless") from e
  if not hasattr(cv2, "ximgproc"):
    raise ImportError(
        "This OpenCV has no contrib modules (cv2.ximgproc); selective search needs "
        "opencv-contrib-python-headless, not opencv-python (uninstall the latter: both "
        "install the same cv2 package).")
  if not _CV2_THREADS_SET:
    with _CV2_LOCK:
      cv2.setNumThreads(1)
      _CV2_THREADS_SET = True
  return cv2


def _as_bgr(image: np.ndarray) -> np.ndarray:
  """uint8 ``[H, W]`` / ``[H, W, 1]`` / ``[H, W, 3]`` -> contiguous 3-channel uint8.

  OpenCV's selective search needs three channels; a grey image becomes three equal ones.
  Channel order does not matter to the result's validity (the colour spaces are computed
  from whatever three channels it is given), so RGB images are passed as they are.
  """
  if image.dtype != np.uint8:
    raise ValueError(f"selective_search needs a uint8 image, got {image.dtype}.")
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[2] not in (1, 3):
    raise ValueError("selective_search needs an [H, W], [H, W, 1] or [H, W, 3] image, "
                     f"got shape {image.shape}.")
  if image.shape[0] < 2 or image.shape[1] < 2:
    raise ValueError(f"selective_search needs an image of at least 2 x 2 pixels, got "
                     f"{image.shape[:2]}.")
  if image.shape[2] == 1:
    image = np.repeat(image, 3, axis=2)
  return np.ascontiguousarray(image)


def _search(image: np.ndarray, mode: str, min_size: int) -> np.ndarray:
  """Every selective search box of ``image`` (see :func:`selective_search`), float32 [N, 4]."""
  if mode not in MODES:
    raise ValueError(f"Unknown selective search mode {mode!r}; use one of {MODES}.")
  if min_size < 1:
    raise ValueError(f"min_size must be >= 1 pixel, got {min_size}.")
  pixels = _as_bgr(image)
  height, width = pixels.shape[:2]
  cv2 = _cv2()
  search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
  search.setBaseImage(pixels)
  if mode == "fast":
    search.switchToSelectiveSearchFast()
  else:
    search.switchToSelectiveSearchQuality()
  with _SEARCH_LOCK:
    if _SRAND is not None:
      _SRAND(_RANK_SEED)
    rects = search.process()
  rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
  boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
  boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
  boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
  sizes = boxes[:, 2:] - boxes[:, :2]
  boxes = boxes[(sizes >= min_size).all(axis=1)]
  # OpenCV already drops repeated rects; clipping can make new repeats. Keep the first.
  _, first = np.unique(boxes, axis=0, return_index=True)
  return np.ascontiguousarray(boxes[np.sort(first)])


def pad_proposals(boxes: np.ndarray, max_proposals: int) -> tuple[np.ndarray, np.ndarray]:
  """The first ``max_proposals`` of ``boxes [N, 4]``, zero-padded, and their valid mask."""
  if max_proposals < 1:
    raise ValueError(f"max_proposals must be >= 1, got {max_proposals}.")
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)[:max_proposals]
  out = np.zeros((max_proposals, 4), np.float32)
  out[:len(boxes)] = boxes
  return out, np.arange(max_proposals) < len(boxes)


def selective_search(image: np.ndarray, *, mode: str = "fast", max_proposals: int = 2000,
                     min_size: int = 4) -> tuple[np.ndarray, np.ndarray]:
  """Selective search proposals of one image, padded to ``max_proposals``.

  Args:
    image: uint8 ``[H, W]`` or ``[H, W, C]`` with C = 1 or 3.
    mode: ``"fast"`` or ``"quality"`` (OpenCV's two presets).
    max_proposals: the fixed number of rows returned (the first ones in OpenCV's order).
    min_size: boxes narrower or shorter than this many pixels are dropped: the
      over-segmentation's single-pixel and sliver regions, which no object fills (the
      shapes dataset's smallest objects are ~6 px wide).

  Returns:
    ``boxes`` float32 ``[max_proposals, 4]`` ``(x1, y1, x2, y2)`` in absolute pixels of
    ``image`` (continuous coordinates: OpenCV's ``(x, y, w, h)`` rect covers columns
    ``x..x+w-1``, i.e. ``[x, x + w)``), clipped to the image, ``x2 > x1`` and ``y2 > y1``,
    in OpenCV's ranking order with exact duplicates removed (a later copy of a box adds
    nothing), zeros after the last proposal; and ``valid`` bool ``[max_proposals]``.
    Deterministic: the same image gives the same boxes in the same order.
  """
  if max_proposals < 1:
    raise ValueError(f"max_proposals must be >= 1, got {max_proposals}.")
  return pad_proposals(_search(image, mode, min_size), max_proposals)


def cache_key(image: np.ndarray, mode: str, min_size: int) -> str:
  """A name for one image's proposals: its pixels, shape and the search settings, hashed.

  Keyed by content rather than by (split, image id): a key cannot go stale when a dataset
  is regenerated with other settings, and the same image in two splits or datasets is
  searched once.
  """
  image = np.ascontiguousarray(image)
  digest = hashlib.sha1(image.tobytes())
  digest.update(repr((image.shape, str(image.dtype), mode, min_size, _RANK_SEED)).encode())
  return digest.hexdigest()


class ProposalCache:
  """Selective search with an on-disk cache: each image is searched once, ever.

  Selective search costs 0.05-0.5 s per 128 px image on one CPU core (``quality``
  the most; more for larger images), more than a training step's share of that image, and
  its result is a pure function of the image, so it is computed on first use and kept in
  ``directory/<key[:2]>/<key>.npy`` (all boxes of the image, unpadded, in image pixels;
  ``key`` from :func:`cache_key`). Files are written to a temporary name and renamed, so
  concurrent workers and processes never read a partial file (two that race both compute
  the same boxes; the last rename wins). ``directory=None`` computes every time.
  """

  def __init__(self, directory: str | None, *, mode: str = "fast", min_size: int = 4):
    if mode not in MODES:
      raise ValueError(f"Unknown selective search mode {mode!r}; use one of {MODES}.")
    if min_size < 1:
      raise ValueError(f"min_size must be >= 1 pixel, got {min_size}.")
    self.directory = directory
    self.mode = mode
    self.min_size = min_size

  def boxes(self, image: np.ndarray) -> np.ndarray:
    """Every proposal of ``image``: float32 ``[N, 4]`` (x1, y1, x2, y2) pixels, ranked."""
    if self.directory is None:
      return _search(image, self.mode, self.min_size)
    key = cache_key(image, self.mode, self.min_size)
    path = os.path.join(self.directory, key[:2], f"{key}.npy")
    try:
      return np.load(path)
    except (FileNotFoundError, ValueError, EOFError, OSError):
      pass  # not cached yet (or unreadable: recompute and overwrite)
    boxes = _search(image, self.mode, self.min_size)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(temporary, "wb") as f:
      np.save(f, boxes)
    os.replace(temporary, path)
    return boxes

  def __call__(self, image: np.ndarray, max_proposals: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`selective_search` of ``image``, through the cache."""
    return pad_proposals(self.boxes(image), max_proposals)
