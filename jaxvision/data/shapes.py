"""The embedded synthetic "shapes" dataset: a TFDS builder that draws its images locally.

Every image is a textured, noisy background with ``min_objects..max_objects`` filled shapes
of ``len(CLASS_NAMES)`` classes drawn on top of each other. Class, colour, size, rotation and
position are drawn independently, so a model has to learn shape: colour says nothing about
the class and flat-colour thresholding does not separate objects from the background.

Geometry (continuous pixel coordinates, pixel ``(row i, column j)`` covers
``[j, j + 1) x [i, i + 1)``, its centre is ``(j + 0.5, i + 0.5)``):

* ``size``: the diameter of the shape's circumscribed circle, uniform in
  ``[MIN_OBJECT_SIZE, image_size / 2]``. Objects lie fully inside the image, so boxes never
  need clipping.
* Later objects are drawn on top of (occlude) earlier ones. A placement that would leave an
  earlier object with less than ``MIN_VISIBLE_FRACTION`` of its pixels visible is rejected
  and re-drawn (new size, position and rotation; the class is kept), so every visible pixel
  of every object is annotated and no annotated object is hidden. After
  ``_MAX_PLACEMENT_TRIES`` rejections the object is left out, so an image can (rarely) hold
  fewer than ``min_objects`` objects.
* ``boxes``: ``(x1, y1, x2, y2)``, the tight box of the object's FULL (unoccluded) pixel mask:
  ``x1`` = first column, ``x2`` = last column + 1. It contains the visible mask and equals
  its tight box when nothing covers the object.
* Instance masks are of the VISIBLE part. Visible masks are disjoint, so they are stored as
  one ``instance_map`` ``[H, W]`` (0 background, ``i + 1`` where object ``i`` is on top);
  ``area`` is the visible pixel count. The semantic map (0 background, ``label + 1`` where
  an object is on top) is derived from it: :func:`semantic_map`.
* ``keypoints`` ``[N, K, 3]``: ``(x, y, visibility)`` of the object's K extreme points in the
  directions ``u_k = (sin(2 pi k / K), -cos(2 pi k / K))``, i.e. clockwise from the top (K=4:
  top, right, bottom, left), taken as the centre of a FULL-mask pixel. Visibility follows
  COCO: 2 if that pixel is visible, 1 if it is occluded. A horizontal flip maps keypoint k
  to keypoint ``(-k) mod K`` (:func:`keypoint_flip_permutation`).

Stuff (``ShapesConfig.stuff_classes = S > 0``; default 0 draws exactly what was drawn
before the option existed, under the same config name): the background is split into
``2..S`` large connected regions (additively weighted Voronoi cells of random seeds, bent
by a smooth one-to-one displacement field; each at least ``MIN_STUFF_FRACTION / R`` of the
image for R regions), each of a distinct stuff class ``s`` (1..S, name
``STUFF_NAMES[s - 1]``) drawn as that class's texture (stripes, checks, dots, waves, grid,
noise: period and orientation tell them apart, a horizontal flip keeps them) in two random
colours, so colour says nothing about the class. Objects ("things") are drawn on top as
without stuff. The ``stuff_map`` ``[H, W]`` (1..S everywhere, under the objects too) is
stored; the semantic map is then ``label + 1`` on things and ``len(CLASS_NAMES) + s`` on
stuff ``s``, with no 0 (:func:`semantic_map`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

CLASS_NAMES = ("square", "circle", "triangle", "star", "cross", "ring")
# Stuff classes (``ShapesConfig.stuff_classes = S`` uses the first S), each a texture that a
# horizontal flip maps onto itself, so flipping never changes a pixel's class.
STUFF_NAMES = ("stripes", "checks", "dots", "waves", "grid", "noise")
SPLITS = ("train", "validation", "test")
MIN_OBJECT_SIZE = 8
MIN_VISIBLE_FRACTION = 0.25
MAX_OBJECTS = 255  # object ids are stored in a uint8 instance map

_MAX_PLACEMENT_TRIES = 50
_MAX_COLOUR_TRIES = 20
# Euclidean RGB distance between an object's colour and the mean colour it covers; keeps
# objects visible without tying colour to class.
_MIN_COLOUR_CONTRAST = 80.0
_PIXEL_NOISE_OFFSET = 15.5  # pixel noise is uniform on {0..31} - 15.5: std ~9
_RING_INNER_RADIUS = 0.55
_STAR_INNER_RADIUS = 0.45
_CROSS_HALF_WIDTH = 0.3


def _unit_polygon(class_name: str) -> np.ndarray:
  """Vertices ``[V, 2]`` (x, y) of a polygon class, scaled so the farthest vertex is at 1."""
  if class_name == "square":
    angles = math.pi / 4 + np.arange(4) * math.pi / 2
    vertices = np.stack([np.cos(angles), np.sin(angles)], axis=1)
  elif class_name == "triangle":
    angles = -math.pi / 2 + np.arange(3) * 2 * math.pi / 3
    vertices = np.stack([np.cos(angles), np.sin(angles)], axis=1)
  elif class_name == "star":
    angles = -math.pi / 2 + np.arange(10) * math.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, _STAR_INNER_RADIUS)
    vertices = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
  elif class_name == "cross":
    w = _CROSS_HALF_WIDTH
    vertices = np.array([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1),
                         (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)], dtype=np.float64)
  else:
    raise ValueError(f"{class_name!r} is not a polygon class.")
  return vertices / np.linalg.norm(vertices, axis=1).max()


_UNIT_POLYGONS = {name: _unit_polygon(name)
                  for name in CLASS_NAMES if name not in ("circle", "ring")}


@functools.lru_cache(maxsize=8)
def _pixel_centres(image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates ``(x [1, S], y [S, 1])`` for broadcasting."""
  centres = np.arange(image_size, dtype=np.float32) + 0.5
  return centres[None, :], centres[:, None]


def keypoint_flip_permutation(num_keypoints: int) -> np.ndarray:
  """Index map of the extreme-point keypoints under a horizontal flip: k -> (-k) mod K."""
  return (-np.arange(num_keypoints)) % num_keypoints


def semantic_map(instance_map: np.ndarray, labels: np.ndarray,
                 stuff_map: np.ndarray | None = None) -> np.ndarray:
  """int32 ``[H, W]``: ``labels[i] + 1`` where object ``i`` is on top; elsewhere 0, or with a
  ``stuff_map`` (stuff class ``1..S`` per pixel) ``len(CLASS_NAMES) + stuff_map``."""
  semantic = np.concatenate([[0], labels + 1]).astype(np.int32)[instance_map]
  if stuff_map is None:
    return semantic
  return np.where(instance_map == 0, len(CLASS_NAMES) + stuff_map.astype(np.int32), semantic)


def _object_mask(class_name: str, centre: np.ndarray, radius: float, angle: float,
                 image_size: int) -> np.ndarray:
  """Full (unoccluded) bool mask ``[S, S]`` of one shape."""
  if class_name in ("circle", "ring"):
    x, y = _pixel_centres(image_size)
    squared_distance = (x - centre[0]) ** 2 + (y - centre[1]) ** 2
    mask = squared_distance <= radius ** 2
    if class_name == "ring":
      mask &= squared_distance > (_RING_INNER_RADIUS * radius) ** 2
    return mask
  rotation = np.array([[math.cos(angle), -math.sin(angle)],
                       [math.sin(angle), math.cos(angle)]])
  # PIL fills the pixels whose integer coordinates lie inside the polygon; shifting by
  # half a pixel makes that "pixel centre inside" in our continuous convention.
  vertices = centre + radius * _UNIT_POLYGONS[class_name] @ rotation.T - 0.5
  canvas = Image.new("L", (image_size, image_size), 0)
  ImageDraw.Draw(canvas).polygon([tuple(v) for v in vertices.tolist()], fill=1)
  return np.asarray(canvas, dtype=bool)


@functools.lru_cache(maxsize=8)
def _extreme_point_directions(num_keypoints: int) -> np.ndarray:
  """``[2, 2K]``: the K keypoint directions ``u_k`` then the K perpendiculars, as columns."""
  angles = 2 * np.pi * np.arange(num_keypoints) / num_keypoints
  along = np.stack([np.sin(angles), -np.cos(angles)])
  across = np.stack([np.cos(angles), np.sin(angles)])
  return np.concatenate([along, across], axis=1).astype(np.float32)


def _box_and_extreme_points(rows: np.ndarray, cols: np.ndarray, num_keypoints: int
                            ) -> tuple[np.ndarray, np.ndarray]:
  """Tight box ``[4]`` and extreme points ``[K, 2]`` (pixel centres) of the pixels
  ``(rows[i], cols[i])`` of a non-empty mask."""
  centres = np.empty((rows.size, 2), dtype=np.float32)
  centres[:, 0] = cols
  centres[:, 1] = rows
  centres += 0.5
  box = np.concatenate([centres.min(axis=0) - 0.5, centres.max(axis=0) + 0.5])
  projections = centres @ _extreme_point_directions(num_keypoints)
  along, across = projections[:, :num_keypoints], projections[:, num_keypoints:]
  # Raster edges make the exact maximum jagged: per direction, take the middle (along the
  # edge) of the pixels within half a pixel of the maximum, which is always a mask pixel.
  near_max = along >= along.max(axis=0) - 0.5
  order = np.argsort(np.where(near_max, across, np.inf), axis=0, kind="stable")
  middle = order[near_max.sum(axis=0) // 2, np.arange(num_keypoints)]
  return box, centres[middle]


_LOW_CELLS = 4  # low-frequency background noise: a 4 x 4 grid of random colours
_MID_CELL_SIZE = 8  # mid-frequency noise: one random colour per 8 x 8 pixels
_MID_AMPLITUDE = 0.25
_RAMP_AMPLITUDE = 100.0


def _upsampling_matrix(num_cells: int, image_size: int) -> np.ndarray:
  """``[S, num_cells]`` linear-interpolation weights from cell centres to pixel centres."""
  positions = np.clip((np.arange(image_size) + 0.5) * num_cells / image_size - 0.5,
                      0, num_cells - 1)
  lower = np.minimum(np.floor(positions).astype(np.int64), num_cells - 2)
  weights = np.zeros((image_size, num_cells), dtype=np.float32)
  rows = np.arange(image_size)
  weights[rows, lower] = 1 - (positions - lower)
  weights[rows, lower + 1] = positions - lower
  return weights


@functools.lru_cache(maxsize=8)
def _background_basis(image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Interpolation weights ``[S, C]`` of the low and mid grids side by side, and the
  low-grid cell centres ``[4]`` in units of the image size, centred on 0."""
  mid_cells = max(2, image_size // _MID_CELL_SIZE)
  weights = np.concatenate([_upsampling_matrix(_LOW_CELLS, image_size),
                            _upsampling_matrix(mid_cells, image_size)], axis=1)
  low_centres = (np.arange(_LOW_CELLS, dtype=np.float32) + 0.5) / _LOW_CELLS - 0.5
  return weights, low_centres


def _background(rng: np.random.Generator, image_size: int) -> np.ndarray:
  """Float32 ``[S, S, 3]`` texture: low- and mid-frequency colour noise plus a colour ramp.

  Both noise grids are interpolated by one matrix product on a block-diagonal cell grid;
  the ramp is linear, so adding it on the low grid's cells draws it (flat half a cell at
  the borders).
  """
  weights, low_centres = _background_basis(image_size)
  num_cells = weights.shape[1]
  cells = np.zeros((3, num_cells, num_cells), dtype=np.float32)
  cells[:, :_LOW_CELLS, :_LOW_CELLS] = rng.uniform(0, 255, (3, _LOW_CELLS, _LOW_CELLS))
  direction = rng.uniform(0, 2 * np.pi)
  ramp = (low_centres[:, None] * math.sin(direction)
          + low_centres[None, :] * math.cos(direction))  # [row, column]
  cells[:, :_LOW_CELLS, :_LOW_CELLS] += (
      rng.uniform(-_RAMP_AMPLITUDE, _RAMP_AMPLITUDE, (3, 1, 1)) * ramp)
  mid_cells = num_cells - _LOW_CELLS
  cells[:, _LOW_CELLS:, _LOW_CELLS:] = _MID_AMPLITUDE * rng.uniform(
      -128, 128, (3, mid_cells, mid_cells))
  return (weights @ cells @ weights.T).transpose(1, 2, 0)


# --- stuff -------------------------------------------------------------------------------
# Each stuff region covers at least this fraction of an image split into R regions, divided
# by R: large regions, never slivers.
MIN_STUFF_FRACTION = 0.4
_MAX_PARTITION_TRIES = 20
# Region boundaries: nearest seed point after bending the image by a smooth displacement
# field of at most this amplitude (in image sizes) on a 4 x 4 grid. Its slope is at most
# 8 x 0.06 < 1/2 per coordinate, so the bend is one-to-one and regions stay connected.
_STUFF_WARP = 0.06
# Seeds' distances are offset by up to this much (additively weighted Voronoi: regions
# differ in size and get curved, still connected, boundaries).
_STUFF_SEED_WEIGHT = 0.1
# The two colours of a region's texture differ at least this much (Euclidean RGB).
_MIN_TEXTURE_CONTRAST = 80.0
_TEXTURE_PERIOD_JITTER = 0.1  # periods vary by up to +-10% from region to region


def _stuff_texture(name: str, rng: np.random.Generator, image_size: int) -> np.ndarray:
  """Pattern in [0, 1] of one stuff class (``[S, S]``, or ``[S, 1]`` when constant along
  rows), with a random phase and a slightly random period (in pixels, so a texture looks
  alike at every image size).

  Every pattern is mirror-symmetric under a horizontal flip up to its phase, so a flipped
  image shows the same classes; they differ in period and orientation (the dominant
  frequencies of their spectra): horizontal stripes (period 6), a checkerboard (period 10,
  diagonal frequencies), dots on a square lattice (period 6), vertical wavy lines (period
  7), a grid of thin lines (period 9), and smooth random blobs (no period).
  """
  x, y = _pixel_centres(image_size)
  jitter = rng.uniform(1 - _TEXTURE_PERIOD_JITTER, 1 + _TEXTURE_PERIOD_JITTER)
  phase_x, phase_y = rng.uniform(0, 1, size=2)
  if name == "stripes":
    wave = np.sin(2 * np.pi * (y / (6 * jitter) + phase_y))
    return np.clip(0.5 + 1.5 * wave, 0, 1)
  if name == "checks":
    period = 10 * jitter
    wave = (np.sin(2 * np.pi * (x / period + phase_x))
            * np.sin(2 * np.pi * (y / period + phase_y)))
    return np.clip(0.5 + 2 * wave, 0, 1)
  if name == "dots":
    period = 6 * jitter
    dx = (x / period + phase_x) % 1 - 0.5
    dy = (y / period + phase_y) % 1 - 0.5
    return np.clip((0.3 - np.sqrt(dx ** 2 + dy ** 2)) * period, 0, 1)
  if name == "waves":
    bend = 1.5 * np.sin(2 * np.pi * (y / 16 + phase_y))
    wave = np.sin(2 * np.pi * ((x + bend) / (7 * jitter) + phase_x))
    return np.clip(0.5 + 1.5 * wave, 0, 1)
  if name == "grid":
    period = 9 * jitter
    distance_x = np.abs((x / period + phase_x) % 1 - 0.5) * period
    distance_y = np.abs((y / period + phase_y) % 1 - 0.5) * period
    return np.clip(1.75 - np.minimum(distance_x, distance_y), 0, 1)
  if name == "noise":
    cells = max(2, round(image_size / 4))
    weights = _upsampling_matrix(cells, image_size)
    field = weights @ rng.uniform(-1, 1, (cells, cells)) @ weights.T
    return np.clip(0.5 + 2 * field, 0, 1)
  raise ValueError(f"{name!r} is not a stuff class; choose from {STUFF_NAMES}.")


def _stuff_partition(rng: np.random.Generator, image_size: int, num_regions: int
                     ) -> np.ndarray:
  """int ``[S, S]`` region index ``0..R-1`` of every pixel; each region covers at least
  ``MIN_STUFF_FRACTION / R`` of the image.

  Seeds are re-drawn while a region is too small; if that keeps failing, the smallest
  regions of the last draw are merged into their neighbours until each of the R' left
  covers ``MIN_STUFF_FRACTION / R'`` (fewer, still large, regions; rare).
  """
  x, y = _pixel_centres(image_size)
  weights = _upsampling_matrix(_LOW_CELLS, image_size)
  min_area = MIN_STUFF_FRACTION / num_regions * image_size ** 2
  for _ in range(_MAX_PARTITION_TRIES):
    seeds = rng.uniform(0, 1, size=(num_regions, 2, 1, 1))
    seed_weights = rng.uniform(-_STUFF_SEED_WEIGHT, _STUFF_SEED_WEIGHT, (num_regions, 1, 1))
    bend = _STUFF_WARP * (weights @ rng.uniform(-1, 1, (2, _LOW_CELLS, _LOW_CELLS))
                          @ weights.T)
    distance = (np.sqrt((x / image_size + bend[0] - seeds[:, 0]) ** 2
                        + (y / image_size + bend[1] - seeds[:, 1]) ** 2) + seed_weights)
    regions = np.argmin(distance, axis=0)
    areas = np.bincount(regions.ravel(), minlength=num_regions)
    if areas.min() >= min_area:
      return regions
  alive = np.ones(num_regions, dtype=bool)
  while alive.sum() > 1:
    smallest = np.argmin(np.where(alive, areas, np.iinfo(areas.dtype).max))
    if areas[smallest] >= MIN_STUFF_FRACTION / alive.sum() * image_size ** 2:
      break
    alive[smallest] = False
    distance[smallest] = np.inf
    regions = np.argmin(distance, axis=0)
    areas = np.bincount(regions.ravel(), minlength=num_regions)
  return regions


def _contrasting_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Two uniform random RGB colours at least ``_MIN_TEXTURE_CONTRAST`` apart (re-drawn)."""
  for _ in range(_MAX_COLOUR_TRIES):
    first, second = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    if np.linalg.norm(first - second) >= _MIN_TEXTURE_CONTRAST:
      break
  return first, second


def _stuff_background(rng: np.random.Generator, image_size: int, stuff_classes: int
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Float32 ``[S, S, 3]`` background of ``2..stuff_classes`` textured regions (one when
  ``stuff_classes == 1``) and the uint8 ``[S, S]`` stuff map (class ``1..stuff_classes``).

  Regions get distinct classes; each class's texture is drawn in two random colours, so
  only the pattern, never the colour, tells the classes apart.
  """
  num_regions = int(rng.integers(min(2, stuff_classes), stuff_classes + 1))
  classes = rng.choice(stuff_classes, size=num_regions, replace=False) + 1
  regions = _stuff_partition(rng, image_size, num_regions)
  canvas = np.empty((image_size, image_size, 3), dtype=np.float32)
  for region, stuff_class in enumerate(classes):
    inside = regions == region
    pattern = np.broadcast_to(_stuff_texture(STUFF_NAMES[stuff_class - 1], rng, image_size),
                              inside.shape)[inside]
    low, high = _contrasting_pair(rng)
    canvas[inside] = low + pattern[:, None] * (high - low)
  return canvas, classes[regions].astype(np.uint8)


def _contrasting_colour(rng: np.random.Generator, covered_mean: np.ndarray) -> np.ndarray:
  """A uniform random RGB colour, re-drawn while too close to the colour it covers."""
  for _ in range(_MAX_COLOUR_TRIES):
    colour = rng.uniform(0, 255, size=3).astype(np.float32)
    if np.linalg.norm(colour - covered_mean) >= _MIN_COLOUR_CONTRAST:
      break
  return colour


def render_example(rng: np.random.Generator, image_size: int, min_objects: int,
                   max_objects: int, num_keypoints: int, stuff_classes: int = 0
                   ) -> dict[str, np.ndarray]:
  """Draws one image and its annotations (see the module docstring for conventions).

  ``stuff_classes = 0`` draws exactly what was drawn before stuff existed (same generator
  calls); ``S > 0`` replaces the background by 2..S textured stuff regions.

  Returns:
    ``image`` uint8 [S, S, 3]; ``instance_map`` uint8 [S, S];
    per object (N of them, in drawing order): ``labels`` int32 [N], ``boxes`` float32 [N, 4],
    ``keypoints`` float32 [N, K, 3], ``area`` float32 [N], ``is_crowd`` bool [N];
    with ``stuff_classes > 0`` also ``stuff_map`` uint8 [S, S] (stuff class 1..S of every
    pixel, under the objects too).
  """
  stuff_map = None
  if stuff_classes:
    canvas, stuff_map = _stuff_background(rng, image_size, stuff_classes)
  else:
    canvas = _background(rng, image_size)
  instance_map = np.zeros((image_size, image_size), dtype=np.uint8)
  # Objects are handled as flat pixel indices into these views.
  flat_canvas, flat_instances = canvas.reshape(-1, 3), instance_map.reshape(-1)
  labels, boxes, extreme_points, full_areas, visible_areas = [], [], [], [], []
  max_radius = image_size / 4
  for _ in range(rng.integers(min_objects, max_objects + 1)):
    label = int(rng.integers(len(CLASS_NAMES)))
    for _ in range(_MAX_PLACEMENT_TRIES):
      radius = rng.uniform(MIN_OBJECT_SIZE / 2, max_radius)
      centre = rng.uniform(radius, image_size - radius, size=2)
      pixels = np.flatnonzero(_object_mask(CLASS_NAMES[label], centre, radius,
                                           rng.uniform(0, 2 * np.pi), image_size))
      covered = np.bincount(flat_instances[pixels], minlength=len(labels) + 1)[1:]
      remaining = np.asarray(visible_areas, dtype=np.int64) - covered
      if np.all(remaining >= MIN_VISIBLE_FRACTION * np.asarray(full_areas)):
        break
    else:
      continue
    covered_mean = flat_canvas[pixels].sum(axis=0) / pixels.size
    flat_canvas[pixels] = _contrasting_colour(rng, covered_mean)
    flat_instances[pixels] = len(labels) + 1
    visible_areas = list(remaining) + [pixels.size]
    full_areas.append(pixels.size)
    box, points = _box_and_extreme_points(*np.divmod(pixels, image_size), num_keypoints)
    labels.append(label)
    boxes.append(box)
    extreme_points.append(points)

  num_objects = len(labels)
  keypoints = np.zeros((num_objects, num_keypoints, 3), dtype=np.float32)
  for index, points in enumerate(extreme_points):
    columns, rows = points.astype(np.int64).T
    visible = instance_map[rows, columns] == index + 1
    keypoints[index, :, :2] = points
    keypoints[index, :, 2] = np.where(visible, 2, 1)
  labels = np.asarray(labels, dtype=np.int32)
  # Raw 64-bit draws are by far the cheapest noise source: their bytes' top 5 bits, centred.
  raw = rng.bit_generator.random_raw(-(-canvas.size // 8)).astype("<u8", copy=False)
  noise = raw.view(np.uint8)[:canvas.size].reshape(canvas.shape) >> 3
  canvas += noise.astype(np.float32)
  canvas -= _PIXEL_NOISE_OFFSET
  image = np.clip(canvas, 0, 255, out=canvas).astype(np.uint8)
  drawn = {
      "image": image,
      "instance_map": instance_map,
      "labels": labels,
      "boxes": np.asarray(boxes, dtype=np.float32).reshape(num_objects, 4),
      "keypoints": keypoints,
      "area": np.asarray(visible_areas, dtype=np.float32).reshape(num_objects),
      "is_crowd": np.zeros(num_objects, dtype=bool),
  }
  if stuff_map is not None:
    drawn["stuff_map"] = stuff_map
  return drawn


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
  """What to generate. ``name`` is derived from the fields, so configs never collide on disk.

  Attributes:
    image_size: Height and width in pixels (>= 2 * MIN_OBJECT_SIZE).
    min_objects: Fewest objects drawn per image (>= 0).
    max_objects: Most objects drawn per image (<= MAX_OBJECTS).
    num_train: Examples in the ``train`` split; likewise ``num_validation``, ``num_test``.
    seed: Generation seed; example ``i`` of split ``s`` is drawn from
      ``np.random.default_rng([seed, SPLITS.index(s), i])``.
    num_keypoints: Extreme points per object (K).
    stuff_classes: S: 0 (the default) draws the plain noisy background; ``S > 0`` divides
      it into 2..S textured regions of the first S ``STUFF_NAMES`` and stores their
      ``stuff_map``. Part of ``name`` only when > 0, so the default's name (and its cached
      files) stay as they were.
  """

  name: str = dataclasses.field(init=False, default="")
  image_size: int = 64
  min_objects: int = 1
  max_objects: int = 1
  num_train: int = 20000
  num_validation: int = 1000
  num_test: int = 1000
  seed: int = 0
  num_keypoints: int = 4
  stuff_classes: int = 0

  def __post_init__(self):
    if self.image_size < 2 * MIN_OBJECT_SIZE:
      raise ValueError(f"shapes image_size={self.image_size} is too small for objects of at "
                       f"least {MIN_OBJECT_SIZE} px; use image_size >= {2 * MIN_OBJECT_SIZE}.")
    if not 0 <= self.min_objects <= self.max_objects <= MAX_OBJECTS:
      raise ValueError(f"shapes needs 0 <= min_objects <= max_objects <= {MAX_OBJECTS}; got "
                       f"min_objects={self.min_objects}, max_objects={self.max_objects}.")
    for split in SPLITS:
      if getattr(self, f"num_{split}") < 1:
        raise ValueError(f"shapes num_{split}={getattr(self, f'num_{split}')}; every split "
                         "needs at least 1 example.")
    if self.num_keypoints < 1 or self.seed < 0:
      raise ValueError(f"shapes needs num_keypoints >= 1 and seed >= 0; got "
                       f"num_keypoints={self.num_keypoints}, seed={self.seed}.")
    if not 0 <= self.stuff_classes <= len(STUFF_NAMES):
      raise ValueError(f"shapes stuff_classes={self.stuff_classes}; use 0 (no stuff) to "
                       f"{len(STUFF_NAMES)} (one per texture of {STUFF_NAMES}).")
    self.name = (f"size{self.image_size}_objects{self.min_objects}-{self.max_objects}"
                 f"_keypoints{self.num_keypoints}_train{self.num_train}"
                 f"_validation{self.num_validation}_test{self.num_test}_seed{self.seed}")
    if self.stuff_classes:
      self.name += f"_stuff{self.stuff_classes}"


class Shapes(tfds.core.GeneratorBasedBuilder):
  """Synthetic shapes for classification, localization, detection, segmentation, keypoints.

  There are no predefined configs (tfds would refuse a custom config named like one): pass
  ``config=ShapesConfig(...)``. Build with ``jaxvision.data.build_dataset`` (file-locked,
  TF-free) or directly::

    builder = Shapes(config=ShapesConfig(num_train=100), data_dir=...,
                     file_format="array_record")

  Stored features: ``image`` (uint8 [S, S, 3], raw bytes), ``image_id`` (index in the
  split), ``instance_map`` (uint8 [S, S], zlib), with ``stuff_classes > 0`` ``stuff_map``
  (uint8 [S, S], zlib, stuff class 1..S of every pixel), and per object ``objects/{label,
  box, keypoints, area, is_crowd}`` with leading axis N. Examples are stored in generation
  order.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # Nothing is downloaded, so there is no checksums file to look up next to the code; tfds's
  # lookup would otherwise import the optional ``importlib_resources`` package.
  code_path = None

  def _info(self) -> tfds.core.DatasetInfo:
    config: ShapesConfig = self.builder_config
    size, num_keypoints = config.image_size, config.num_keypoints
    # Only with stuff: the default's features (and so its files) stay as they were.
    stuff = ({"stuff_map": tfds.features.Tensor(shape=(size, size), dtype=np.uint8,
                                                encoding="zlib")}
             if config.stuff_classes else {})
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        # Keep example i at index i, so image_id == position in the split.
        disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            **stuff,
            # Raw bytes: the pixel noise makes PNG/zlib gain only ~25% of the size, at
            # ~1 ms per image to encode and ~0.3 ms to decode.
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8,
                                          encoding="bytes"),
            "image_id": tfds.features.Scalar(dtype=np.int32),
            "instance_map": tfds.features.Tensor(shape=(size, size), dtype=np.uint8,
                                                 encoding="zlib"),
            "objects": tfds.features.FeaturesDict({
                "label": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                "box": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
                "keypoints": tfds.features.Tensor(shape=(None, num_keypoints, 3),
                                                  dtype=np.float32),
                "area": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                "is_crowd": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
            }),
        }),
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[int, dict]]]:
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    config: ShapesConfig = self.builder_config
    split_index = SPLITS.index(split)
    for index in range(getattr(config, f"num_{split}")):
      rng = np.random.default_rng([config.seed, split_index, index])
      drawn = render_example(rng, config.image_size, config.min_objects, config.max_objects,
                             config.num_keypoints, config.stuff_classes)
      example = {
          "image": drawn["image"],
          "image_id": index,
          "instance_map": drawn["instance_map"],
          "objects": {"label": drawn["labels"], "box": drawn["boxes"],
                      "keypoints": drawn["keypoints"], "area": drawn["area"],
                      "is_crowd": drawn["is_crowd"]},
      }
      if config.stuff_classes:
        example["stuff_map"] = drawn["stuff_map"]
      yield index, example
