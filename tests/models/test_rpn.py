"""Region Proposal Network pieces: parity with torchvision's ``rpn.py``, hand-made target cases."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import ops
from jaxvision.models import rpn
from random_inputs import random_boxes

IMAGE_SIZE = (96, 128)  # (height, width): not square, so a swapped axis would show


def _rpn_level_inputs(rng: np.random.Generator, counts: list[int]):
  anchors = [random_boxes(rng, n, 110) for n in counts]
  logits = [rng.normal(size=n).astype(np.float32) for n in counts]
  deltas = [rng.normal(scale=0.3, size=(n, 4)).astype(np.float32) for n in counts]
  return anchors, logits, deltas


def test_propose_matches_torchvision_filter_proposals():
  torch = pytest.importorskip("torch")
  tv_rpn = pytest.importorskip("torchvision.models.detection.rpn")
  tv_utils = pytest.importorskip("torchvision.models.detection._utils")
  rng = np.random.default_rng(0)
  counts = [300, 120, 40]  # the last level has fewer anchors than pre_nms_top_n
  anchors, logits, deltas = _rpn_level_inputs(rng, counts)
  pre_nms_top_n, post_nms_top_n = 60, 80

  boxes, scores, valid = jax.jit(functools.partial(
      rpn.propose, image_size=IMAGE_SIZE, pre_nms_top_n=pre_nms_top_n,
      post_nms_top_n=post_nms_top_n, nms_threshold=0.7, min_size=2.0))(anchors, logits, deltas)

  reference = tv_rpn.RegionProposalNetwork(
      None, None, 0.7, 0.3, 256, 0.5, dict(training=pre_nms_top_n, testing=pre_nms_top_n),
      dict(training=post_nms_top_n, testing=post_nms_top_n), 0.7)
  reference.min_size = 2.0
  reference.eval()
  decoded = tv_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(
      torch.from_numpy(np.concatenate(deltas)), torch.from_numpy(np.concatenate(anchors)))
  want_boxes, want_scores = reference.filter_proposals(
      decoded[None], torch.from_numpy(np.concatenate(logits))[None], [IMAGE_SIZE], counts)
  want_boxes, want_scores = want_boxes[0].numpy(), want_scores[0].numpy()

  assert boxes.shape == (post_nms_top_n, 4)
  assert int(valid.sum()) == len(want_boxes)
  assert not np.any(valid[len(want_boxes):])
  np.testing.assert_allclose(boxes[:len(want_boxes)], want_boxes, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(scores[:len(want_boxes)], want_scores, rtol=1e-6)


def test_propose_box_voting_refines_the_kept_proposals_only():
  rng = np.random.default_rng(1)
  counts = [300, 120, 40]
  anchors, logits, deltas = _rpn_level_inputs(rng, counts)
  settings = dict(image_size=IMAGE_SIZE, pre_nms_top_n=60, post_nms_top_n=80,
                  nms_threshold=0.7, min_size=2.0)
  plain = rpn.propose(anchors, logits, deltas, **settings)
  voted = rpn.propose(anchors, logits, deltas, **settings, voting_iou=0.6)
  np.testing.assert_array_equal(voted[1], plain[1])  # scores, order and valid unchanged
  np.testing.assert_array_equal(voted[2], plain[2])
  # The voters: every level's top-60 candidates, decoded, clipped, big enough.
  candidates, weights = [], []
  for a, l, d in zip(anchors, logits, deltas):
    top = np.argsort(-l, kind="stable")[:60]
    candidates.append(ops.decode_boxes(d[top], a[top]))
    weights.append(jax.nn.sigmoid(l[top]))
  candidates = ops.clip_boxes(jnp.concatenate(candidates), IMAGE_SIZE)
  want = ops.box_voting(plain[0], candidates, jnp.concatenate(weights), 0.6,
                        valid=ops.small_box_mask(candidates, 2.0))
  valid = np.asarray(plain[2])
  np.testing.assert_allclose(np.asarray(voted[0])[valid], np.asarray(want)[valid], rtol=1e-5,
                             atol=1e-4)
  assert np.all(np.asarray(voted[0])[~valid] == 0)
  moved = np.abs(np.asarray(voted[0]) - np.asarray(plain[0])).max(1)[valid]
  assert np.sum(moved > 0.1) >= 5


def test_rpn_loss_matches_torchvision_compute_loss():
  torch = pytest.importorskip("torch")
  tv_rpn = pytest.importorskip("torchvision.models.detection.rpn")
  rng = np.random.default_rng(3)
  batch, num_anchors = 2, 50
  logits = rng.normal(size=(batch, num_anchors)).astype(np.float32)
  deltas = rng.normal(size=(batch, num_anchors, 4)).astype(np.float32)
  objectness = (rng.uniform(size=(batch, num_anchors)) < 0.3).astype(np.float32)
  sampled = rng.uniform(size=(batch, num_anchors)) < 0.6
  box_targets = rng.normal(size=(batch, num_anchors, 4)).astype(np.float32)

  losses = rpn.rpn_loss(jnp.asarray(logits), jnp.asarray(deltas),
                        {"objectness": jnp.asarray(objectness),
                         "positive": jnp.asarray(objectness == 1),
                         "sampled": jnp.asarray(sampled),
                         "box_targets": jnp.asarray(box_targets)}, beta=1 / 9)

  class FixedSampler:
    """torchvision's loss with our sample instead of its own random one."""

    def __call__(self, labels):
      del labels
      positive = torch.from_numpy(sampled & (objectness == 1))
      negative = torch.from_numpy(sampled & (objectness == 0))
      return list(positive), list(negative)

  reference = tv_rpn.RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, {}, {}, 0.7)
  reference.fg_bg_sampler = FixedSampler()
  want_objectness, want_box = reference.compute_loss(
      torch.from_numpy(logits.reshape(-1)), torch.from_numpy(deltas.reshape(-1, 4)),
      list(torch.from_numpy(objectness)), list(torch.from_numpy(box_targets)))
  np.testing.assert_allclose(losses["rpn_objectness"], want_objectness.item(), rtol=1e-5)
  np.testing.assert_allclose(losses["rpn_box"], want_box.item(), rtol=1e-5)


RPN_SETTINGS = dict(foreground_iou=0.7, background_iou=0.3, samples_per_image=64,
                    positive_fraction=0.5)
# Compiled once per target kind and shared by the tests below (their inputs have one shape).
jit_rpn_targets = jax.jit(functools.partial(rpn.rpn_targets, **RPN_SETTINGS),
                          static_argnames="objectness_target")


def _anchors():
  """Anchors of a 64 x 64 image on P2..P4 (strides 4, 8, 16), concatenated."""
  levels = rpn.level_anchors([(16, 16), (8, 8), (4, 4)], [4, 8, 16], (8.0, 16.0, 32.0),
                             (0.5, 1.0, 2.0))
  assert [len(a) for a in levels] == [768, 192, 48]
  return jnp.concatenate(levels)


def test_rpn_targets_gt_equal_to_an_anchor_is_positive_with_zero_deltas():
  anchors = _anchors()
  chosen = 800  # an anchor of the second level
  gt_boxes = jnp.stack([anchors[chosen], jnp.array([2.0, 3.0, 30.0, 20.0]), jnp.zeros(4)])
  gt_valid = jnp.array([True, True, False])
  targets = jit_rpn_targets(anchors, gt_boxes, gt_valid, jax.random.key(0))
  assert targets["objectness"][chosen] == 1
  assert targets["sampled"][chosen]  # few positives: all of them are sampled
  np.testing.assert_array_equal(targets["box_targets"][chosen], np.zeros(4))
  assert int(targets["sampled"].sum()) == RPN_SETTINGS["samples_per_image"]
  positives = np.asarray(targets["objectness"] == 1)
  assert 2 <= positives.sum() <= RPN_SETTINGS["samples_per_image"] // 2
  # Every positive is regressed towards a real object, never towards the padding slot.
  decoded = ops.decode_boxes(targets["box_targets"][positives], anchors[positives])
  iou = np.asarray(ops.box_iou(decoded, gt_boxes[:2]))
  np.testing.assert_allclose(iou.max(axis=1), 1.0, rtol=1e-5)


def test_rpn_targets_without_gt_are_all_negative_with_finite_loss():
  anchors = _anchors()
  targets = jit_rpn_targets(anchors, jnp.zeros((3, 4)), jnp.zeros(3, bool), jax.random.key(1))
  assert not np.any(targets["objectness"])
  assert int(targets["sampled"].sum()) == RPN_SETTINGS["samples_per_image"]
  batched = jax.tree.map(lambda x: x[None], targets)
  losses = jax.jit(functools.partial(rpn.rpn_loss, beta=1 / 9))(
      jax.random.normal(jax.random.key(2), (1, len(anchors))), jnp.ones((1, len(anchors), 4)),
      batched)
  assert np.isfinite(float(losses["rpn_objectness"])) and float(losses["rpn_objectness"]) > 0
  assert float(losses["rpn_box"]) == 0.0


def test_rpn_iou_objectness_targets_are_the_predicted_boxes_iou():
  anchors = _anchors()
  chosen = 800
  gt_boxes = jnp.stack([anchors[chosen], jnp.array([2.0, 3.0, 30.0, 20.0]), jnp.zeros(4)])
  gt_valid = jnp.array([True, True, False])
  deltas = 0.2 * jax.random.normal(jax.random.key(5), anchors.shape)
  deltas = deltas.at[chosen].set(0.0)  # this anchor predicts its ground truth exactly
  binary = jit_rpn_targets(anchors, gt_boxes, gt_valid, jax.random.key(0))
  soft = jit_rpn_targets(anchors, gt_boxes, gt_valid, jax.random.key(0),
                         objectness_target="iou", deltas=deltas)
  # Same anchors, sample and box targets; only the positives' objectness changes.
  for name in ("positive", "sampled", "box_targets"):
    np.testing.assert_array_equal(soft[name], binary[name])
  positive = np.asarray(soft["positive"])
  assert not np.any(np.asarray(soft["objectness"])[~positive])
  np.testing.assert_allclose(soft["objectness"][chosen], 1.0, rtol=1e-6)
  predicted = ops.decode_boxes(deltas[positive], anchors[positive])
  # Each positive's own ground truth (what its box targets encode), not the best-overlapping
  # one: a predicted box may overlap another object more than the one its anchor matched.
  matched = ops.decode_boxes(soft["box_targets"][positive], anchors[positive])
  np.testing.assert_allclose(np.asarray(soft["objectness"])[positive],
                             ops.paired_box_iou(predicted, matched), atol=1e-5)
  assert np.any(np.asarray(soft["objectness"])[positive] < 0.99)
  # Raised while tracing, before anything compiles.
  with pytest.raises(ValueError, match="needs the predicted deltas"):
    jit_rpn_targets(anchors, gt_boxes, gt_valid, jax.random.key(0), objectness_target="iou")
  with pytest.raises(ValueError, match="rpn_objectness_target 'centerness'"):
    jit_rpn_targets(anchors, gt_boxes, gt_valid, jax.random.key(0),
                    objectness_target="centerness", deltas=deltas)


def test_rpn_head_needs_a_conv_layer():
  with pytest.raises(ValueError, match="num_convs=0"):
    rpn.RPNHead(3, num_convs=0).init(jax.random.key(0), [jnp.zeros((1, 4, 4, 8))])


def test_rpn_giou_box_loss_on_a_hand_made_case():
  anchors = jnp.array([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 4.0, 4.0]])
  gt = jnp.array([[0.0, 0.0, 10.0, 20.0], [40.0, 40.0, 50.0, 50.0]])  # 2nd: beside the anchor
  targets = {"objectness": jnp.array([[1.0, 1.0, 0.0]]),
             "positive": jnp.array([[True, True, False]]),
             "sampled": jnp.array([[True, True, True]]),
             "box_targets": ops.encode_boxes(jnp.concatenate([gt, anchors[2:]]), anchors)[None]}
  deltas = jnp.zeros((1, 3, 4))  # predicted boxes = anchors
  box_loss_and_grad = jax.jit(jax.value_and_grad(lambda d: rpn.rpn_loss(
      jnp.zeros((1, 3)), d, targets, 1 / 9, "giou", anchors)["rpn_box"]))
  loss, grad = box_loss_and_grad(deltas)
  # Anchor 0 inside its object: GIoU = IoU = 0.5. Anchor 1 disjoint from its object:
  # IoU 0, enclosing box 30 x 30 = 900, union 200, GIoU = -700 / 900. Three sampled anchors.
  np.testing.assert_allclose(loss, ((1 - 0.5) + (1 + 700 / 900)) / 3, rtol=1e-6)
  # Perfect predictions cost nothing; the gradient reaches the deltas.
  perfect, _ = box_loss_and_grad(targets["box_targets"])
  np.testing.assert_allclose(perfect, 0.0, atol=1e-6)
  assert np.abs(grad[0, :2]).sum() > 0 and np.all(grad[0, 2] == 0)  # negatives: no box loss
  with pytest.raises(ValueError, match="needs the anchors"):
    rpn.rpn_loss(jnp.zeros((1, 3)), deltas, targets, 1 / 9, "giou")
  with pytest.raises(ValueError, match="Unknown RPN box loss 'iou'"):
    rpn.rpn_loss(jnp.zeros((1, 3)), deltas, targets, 1 / 9, "iou", anchors)
