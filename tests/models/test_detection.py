"""Faster R-CNN pieces: parity with torchvision's detection code, hand-made target cases."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import ops
from jaxvision.models import detection

torch = pytest.importorskip("torch")
tv_rpn = pytest.importorskip("torchvision.models.detection.rpn")
tv_roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")
tv_utils = pytest.importorskip("torchvision.models.detection._utils")

IMAGE_SIZE = (96, 128)  # (height, width): not square, so a swapped axis would show


def _random_boxes(rng: np.random.Generator, count: int, size: float, max_side: float = 48.0
                  ) -> np.ndarray:
  top_left = rng.uniform(-8, size, (count, 2))
  sides = rng.uniform(1, max_side, (count, 2))
  return np.concatenate([top_left, top_left + sides], 1).astype(np.float32)


def _rpn_level_inputs(rng: np.random.Generator, counts: list[int]):
  anchors = [_random_boxes(rng, n, 110) for n in counts]
  logits = [rng.normal(size=n).astype(np.float32) for n in counts]
  deltas = [rng.normal(scale=0.3, size=(n, 4)).astype(np.float32) for n in counts]
  return anchors, logits, deltas


def test_propose_matches_torchvision_filter_proposals():
  rng = np.random.default_rng(0)
  counts = [300, 120, 40]  # the last level has fewer anchors than pre_nms_top_n
  anchors, logits, deltas = _rpn_level_inputs(rng, counts)
  pre_nms_top_n, post_nms_top_n = 60, 80

  boxes, scores, valid = jax.jit(functools.partial(
      detection.propose, image_size=IMAGE_SIZE, pre_nms_top_n=pre_nms_top_n,
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
  plain = detection.propose(anchors, logits, deltas, **settings)
  voted = detection.propose(anchors, logits, deltas, **settings, voting_iou=0.6)
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


def test_faster_rcnn_rejects_box_voting_iou_outside_unit_interval():
  model = detection.FasterRCNN(**{**TINY_MODEL, "rpn_box_voting_iou": 1.5})
  with pytest.raises(ValueError, match="rpn_box_voting_iou"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))


def test_detect_matches_torchvision_postprocess_detections():
  rng = np.random.default_rng(1)
  num_rois, num_classes = 60, 4
  rois = _random_boxes(rng, num_rois, 100)
  rois[:, 2:] = np.maximum(rois[:, 2:], rois[:, :2] + 2)
  logits = rng.normal(scale=2.0, size=(num_rois, num_classes + 1)).astype(np.float32)
  deltas = rng.normal(scale=0.5, size=(num_rois, num_classes + 1, 4)).astype(np.float32)
  # Near-duplicate RoIs with the same class so NMS has work to do.
  rois[30:], logits[30:] = rois[:30] + 1.0, logits[:30] + 0.1
  roi_valid = np.ones(num_rois, bool)
  roi_valid[-5:] = False  # padding RoIs must never give detections

  out = jax.jit(functools.partial(
      detection.detect, image_size=IMAGE_SIZE, box_weights=(10.0, 10.0, 5.0, 5.0),
      score_threshold=0.05, nms_threshold=0.5, max_detections=40,
      candidates_per_image=num_rois * num_classes))(rois, roi_valid, logits, deltas)

  reference = tv_roi_heads.RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0),
                                    0.05, 0.5, 40)
  kept = slice(0, num_rois - 5)
  want_boxes, want_scores, want_labels = reference.postprocess_detections(
      torch.from_numpy(logits[kept]), torch.from_numpy(deltas[kept].reshape(-1, 4 * 5)),
      [torch.from_numpy(rois[kept])], [IMAGE_SIZE])
  want_boxes, want_scores, want_labels = (x[0].numpy() for x in (want_boxes, want_scores,
                                                                 want_labels))

  count = len(want_boxes)
  assert 10 < count <= 40
  assert int(out["valid"].sum()) == count
  np.testing.assert_allclose(out["scores"][:count], want_scores, rtol=1e-5)
  np.testing.assert_allclose(out["boxes"][:count], want_boxes, rtol=1e-4, atol=1e-3)
  np.testing.assert_array_equal(out["classes"][:count], want_labels - 1)  # 0-based classes
  assert np.all(out["scores"][count:] == 0)


def test_box_head_loss_matches_torchvision_fastrcnn_loss():
  rng = np.random.default_rng(2)
  batch, samples, num_classes = 2, 16, 3
  logits = rng.normal(size=(batch, samples, num_classes + 1)).astype(np.float32)
  deltas = rng.normal(size=(batch, samples, num_classes + 1, 4)).astype(np.float32)
  classes = rng.integers(0, num_classes + 1, (batch, samples)).astype(np.int32)
  box_targets = rng.normal(size=(batch, samples, 4)).astype(np.float32)
  valid = np.ones((batch, samples), bool)
  valid[1, 12:] = False  # the second image had fewer candidates than samples_per_image

  losses = detection.box_head_loss(
      jnp.asarray(logits), jnp.asarray(deltas),
      {"classes": jnp.asarray(classes), "valid": jnp.asarray(valid),
       "box_targets": jnp.asarray(box_targets)}, beta=1 / 9)

  want_classifier, want_box = tv_roi_heads.fastrcnn_loss(
      torch.from_numpy(logits[valid]), torch.from_numpy(deltas[valid].reshape(-1, 16)),
      [torch.from_numpy(classes[valid]).long()], [torch.from_numpy(box_targets[valid])])
  np.testing.assert_allclose(losses["roi_classifier"], want_classifier.item(), rtol=1e-5)
  np.testing.assert_allclose(losses["roi_box"], want_box.item(), rtol=1e-5)


def test_rpn_loss_matches_torchvision_compute_loss():
  rng = np.random.default_rng(3)
  batch, num_anchors = 2, 50
  logits = rng.normal(size=(batch, num_anchors)).astype(np.float32)
  deltas = rng.normal(size=(batch, num_anchors, 4)).astype(np.float32)
  objectness = (rng.uniform(size=(batch, num_anchors)) < 0.3).astype(np.float32)
  sampled = rng.uniform(size=(batch, num_anchors)) < 0.6
  box_targets = rng.normal(size=(batch, num_anchors, 4)).astype(np.float32)

  losses = detection.rpn_loss(jnp.asarray(logits), jnp.asarray(deltas),
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
ROI_SETTINGS = dict(foreground_iou=0.5, background_iou=0.5, samples_per_image=24,
                    positive_fraction=0.25, box_weights=(10.0, 10.0, 5.0, 5.0))


def _anchors():
  """Anchors of a 64 x 64 image on P2..P4 (strides 4, 8, 16), concatenated."""
  levels = detection.level_anchors([(16, 16), (8, 8), (4, 4)], [4, 8, 16], (8.0, 16.0, 32.0),
                                   (0.5, 1.0, 2.0))
  assert [len(a) for a in levels] == [768, 192, 48]
  return jnp.concatenate(levels)


def test_rpn_targets_gt_equal_to_an_anchor_is_positive_with_zero_deltas():
  anchors = _anchors()
  chosen = 800  # an anchor of the second level
  gt_boxes = jnp.stack([anchors[chosen], jnp.array([2.0, 3.0, 30.0, 20.0]), jnp.zeros(4)])
  gt_valid = jnp.array([True, True, False])
  targets = jax.jit(functools.partial(detection.rpn_targets, **RPN_SETTINGS))(
      anchors, gt_boxes, gt_valid, jax.random.key(0))
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
  targets = detection.rpn_targets(anchors, jnp.zeros((3, 4)), jnp.zeros(3, bool),
                                  jax.random.key(1), **RPN_SETTINGS)
  assert not np.any(targets["objectness"])
  assert int(targets["sampled"].sum()) == RPN_SETTINGS["samples_per_image"]
  batched = jax.tree.map(lambda x: x[None], targets)
  losses = detection.rpn_loss(jax.random.normal(jax.random.key(2), (1, len(anchors))),
                              jnp.ones((1, len(anchors), 4)), batched, beta=1 / 9)
  assert np.isfinite(float(losses["rpn_objectness"])) and float(losses["rpn_objectness"]) > 0
  assert float(losses["rpn_box"]) == 0.0


def test_rpn_iou_objectness_targets_are_the_predicted_boxes_iou():
  anchors = _anchors()
  chosen = 800
  gt_boxes = jnp.stack([anchors[chosen], jnp.array([2.0, 3.0, 30.0, 20.0]), jnp.zeros(4)])
  gt_valid = jnp.array([True, True, False])
  deltas = 0.2 * jax.random.normal(jax.random.key(5), anchors.shape)
  deltas = deltas.at[chosen].set(0.0)  # this anchor predicts its ground truth exactly
  binary = detection.rpn_targets(anchors, gt_boxes, gt_valid, jax.random.key(0), **RPN_SETTINGS)
  soft = detection.rpn_targets(anchors, gt_boxes, gt_valid, jax.random.key(0),
                               objectness_target="iou", deltas=deltas, **RPN_SETTINGS)
  # Same anchors, sample and box targets; only the positives' objectness changes.
  for name in ("positive", "sampled", "box_targets"):
    np.testing.assert_array_equal(soft[name], binary[name])
  positive = np.asarray(soft["positive"])
  assert not np.any(np.asarray(soft["objectness"])[~positive])
  np.testing.assert_allclose(soft["objectness"][chosen], 1.0, rtol=1e-6)
  predicted = ops.decode_boxes(deltas[positive], anchors[positive])
  best_iou = np.asarray(ops.box_iou(predicted, gt_boxes[:2])).max(axis=1)
  np.testing.assert_allclose(np.asarray(soft["objectness"])[positive], best_iou, atol=1e-5)
  assert np.any(np.asarray(soft["objectness"])[positive] < 0.99)
  with pytest.raises(ValueError, match="needs the predicted deltas"):
    detection.rpn_targets(anchors, gt_boxes, gt_valid, jax.random.key(0),
                          objectness_target="iou", **RPN_SETTINGS)
  with pytest.raises(ValueError, match="rpn_objectness_target 'centerness'"):
    detection.rpn_targets(anchors, gt_boxes, gt_valid, jax.random.key(0),
                          objectness_target="centerness", deltas=deltas, **RPN_SETTINGS)


def test_roi_targets_add_gt_boxes_as_perfect_positives():
  gt_boxes = jnp.array([[4.0, 6.0, 30.0, 40.0], [40.0, 8.0, 60.0, 20.0], [0.0, 0.0, 0.0, 0.0]])
  gt_labels = jnp.array([3, 0, 0])
  gt_valid = jnp.array([True, True, False])
  # Only background proposals (and two padding slots): the gt boxes are the only positives.
  proposals = jnp.array([[0.0, 44.0, 10.0, 60.0]] * 28 + [[0.0, 0.0, 1.0, 1.0]] * 2)
  proposal_valid = jnp.arange(30) < 28
  targets = jax.jit(functools.partial(detection.roi_targets, **ROI_SETTINGS))(
      proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, jax.random.key(0))
  chex.assert_shape(targets["rois"], (ROI_SETTINGS["samples_per_image"], 4))
  assert int(targets["valid"].sum()) == ROI_SETTINGS["samples_per_image"]
  foreground = np.asarray(targets["classes"] > 0)
  assert foreground.sum() == 2
  np.testing.assert_array_equal(np.sort(targets["classes"][foreground]), [1, 4])  # label + 1
  np.testing.assert_array_equal(targets["box_targets"][foreground], np.zeros((2, 4)))
  np.testing.assert_allclose(np.sort(np.asarray(targets["rois"][foreground])[:, 0]), [4, 40])


def test_roi_targets_without_gt_are_background_with_finite_loss():
  proposals = _random_boxes(np.random.default_rng(4), 30, 50)
  targets = detection.roi_targets(jnp.asarray(proposals), jnp.ones(30, bool), jnp.zeros((3, 4)),
                                  jnp.zeros(3, jnp.int32), jnp.zeros(3, bool),
                                  jax.random.key(1), **ROI_SETTINGS)
  assert not np.any(targets["classes"])
  assert int(targets["valid"].sum()) == ROI_SETTINGS["samples_per_image"]
  batched = jax.tree.map(lambda x: x[None], targets)
  samples = ROI_SETTINGS["samples_per_image"]
  losses = detection.box_head_loss(jnp.zeros((1, samples, 4)), jnp.ones((1, samples, 4, 4)),
                                   batched, beta=1 / 9)
  np.testing.assert_allclose(losses["roi_classifier"], np.log(4), rtol=1e-6)
  assert float(losses["roi_box"]) == 0.0


TINY_MODEL = dict(num_classes=3, backbone="resnet_tiny", fpn_channels=8,
                  anchor_sizes=(8.0, 16.0, 32.0, 64.0, 128.0), rpn_post_nms_top_n_train=20,
                  rpn_post_nms_top_n_test=20, roi_samples_per_image=16, box_head_hidden=16)


def test_faster_rcnn_rejects_backbone_without_stride_four_features():
  model = detection.FasterRCNN(**{**TINY_MODEL, "backbone_kwargs": {"stem": "small"}})
  with pytest.raises(ValueError, match="stem='imagenet'"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))


def test_fast_rcnn_mode_requires_proposals_and_has_no_rpn():
  model = detection.FasterRCNN(**{**TINY_MODEL, "proposal_source": "data"})
  images = jnp.zeros((1, 64, 64, 3))
  with pytest.raises(ValueError, match="proposal_valid"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
  proposals = jnp.array([[[4.0, 4.0, 30.0, 30.0]] * 20])
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), images, train=False, proposals=proposals,
      proposal_valid=jnp.ones((1, 20), bool)))
  assert "rpn_head" not in variables["params"]


def test_roi_samples_beyond_candidates_is_an_error():
  model = detection.FasterRCNN(**{**TINY_MODEL, "roi_samples_per_image": 64})
  images = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
  with pytest.raises(ValueError, match="roi_samples_per_image=64"):
    jax.eval_shape(lambda v: model.apply(
        v, images, train=True, gt_boxes=jnp.zeros((1, 2, 4)),
        gt_labels=jnp.zeros((1, 2), jnp.int32), gt_valid=jnp.zeros((1, 2), bool),
        rngs={"sampling": jax.random.key(0)}, mutable=["batch_stats"]), variables)


def test_anchor_scales_give_every_scale_at_every_location_in_head_order():
  scales = (1.0, 2.0)
  levels = detection.level_anchors([(4, 4), (2, 2)], [4, 8], (8.0, 16.0), (0.5, 1.0, 2.0),
                                   scales)
  assert [len(a) for a in levels] == [4 * 4 * 6, 2 * 2 * 6]
  for anchors, size in zip(levels, (8.0, 16.0)):
    cell = np.asarray(anchors[:6])  # the templates of location (0, 0), ratio-major
    sides = np.sqrt((cell[:, 2] - cell[:, 0]) * (cell[:, 3] - cell[:, 1]))
    np.testing.assert_allclose(sides, [size, 2 * size] * 3, rtol=0.1)  # rounded corners
  # The head predicts one objectness and one delta per (scale, ratio) at every location,
  # so a model with two scales has as many outputs as anchors, level by level.
  model = detection.FasterRCNN(**{**TINY_MODEL, "anchor_scales": scales, "rpn_head_convs": 2})
  images = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
  head = variables["params"]["rpn_head"]
  assert sorted(head) == ["box_deltas", "conv", "conv2", "objectness"]
  assert head["objectness"]["kernel"].shape[-1] == 6
  assert head["box_deltas"]["kernel"].shape[-1] == 24
  outputs = jax.eval_shape(lambda v: model.apply(
      v, images, train=True, gt_boxes=jnp.zeros((1, 2, 4)),
      gt_labels=jnp.zeros((1, 2), jnp.int32), gt_valid=jnp.zeros((1, 2), bool),
      rngs={"sampling": jax.random.key(0)}, mutable=["batch_stats"]), variables)
  assert set(outputs[0]["losses"]) >= {"rpn_objectness", "rpn_box"}


def test_rpn_head_needs_a_conv_layer():
  with pytest.raises(ValueError, match="num_convs=0"):
    detection.RPNHead(3, num_convs=0).init(jax.random.key(0), [jnp.zeros((1, 4, 4, 8))])


def test_rpn_giou_box_loss_on_a_hand_made_case():
  anchors = jnp.array([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 4.0, 4.0]])
  gt = jnp.array([[0.0, 0.0, 10.0, 20.0], [40.0, 40.0, 50.0, 50.0]])  # 2nd: beside the anchor
  targets = {"objectness": jnp.array([[1.0, 1.0, 0.0]]),
             "positive": jnp.array([[True, True, False]]),
             "sampled": jnp.array([[True, True, True]]),
             "box_targets": ops.encode_boxes(jnp.concatenate([gt, anchors[2:]]), anchors)[None]}
  deltas = jnp.zeros((1, 3, 4))  # predicted boxes = anchors
  losses = detection.rpn_loss(jnp.zeros((1, 3)), deltas, targets, 1 / 9, "giou", anchors)
  # Anchor 0 inside its object: GIoU = IoU = 0.5. Anchor 1 disjoint from its object:
  # IoU 0, enclosing box 30 x 30 = 900, union 200, GIoU = -700 / 900. Three sampled anchors.
  np.testing.assert_allclose(losses["rpn_box"], ((1 - 0.5) + (1 + 700 / 900)) / 3, rtol=1e-6)
  # Perfect predictions cost nothing; the gradient reaches the deltas.
  perfect = detection.rpn_loss(jnp.zeros((1, 3)), targets["box_targets"], targets, 1 / 9,
                               "giou", anchors)
  np.testing.assert_allclose(perfect["rpn_box"], 0.0, atol=1e-6)
  grad = jax.grad(lambda d: detection.rpn_loss(jnp.zeros((1, 3)), d, targets, 1 / 9, "giou",
                                               anchors)["rpn_box"])(deltas)
  assert np.abs(grad[0, :2]).sum() > 0 and np.all(grad[0, 2] == 0)  # negatives: no box loss
  with pytest.raises(ValueError, match="needs the anchors"):
    detection.rpn_loss(jnp.zeros((1, 3)), deltas, targets, 1 / 9, "giou")
  with pytest.raises(ValueError, match="Unknown RPN box loss 'iou'"):
    detection.rpn_loss(jnp.zeros((1, 3)), deltas, targets, 1 / 9, "iou", anchors)


def test_rpn_box_loss_weight_scales_only_the_rpn_box_loss():
  images = jax.random.uniform(jax.random.key(1), (1, 64, 64, 3))
  truth = dict(gt_boxes=jnp.array([[[8.0, 8.0, 30.0, 28.0], [30.0, 34.0, 60.0, 60.0]]]),
               gt_labels=jnp.array([[0, 2]]), gt_valid=jnp.array([[True, True]]))
  variables = jax.jit(lambda: detection.FasterRCNN(**TINY_MODEL).init(
      jax.random.key(0), images, train=False))()

  @functools.partial(jax.jit, static_argnums=0)
  def losses(weight):
    model = detection.FasterRCNN(**{**TINY_MODEL, "rpn_box_loss_weight": weight})
    outputs, _ = model.apply(variables, images, train=True, **truth,
                             rngs={"sampling": jax.random.key(2)}, mutable=["batch_stats"])
    return outputs["losses"]

  plain, tripled = jax.device_get(losses(1.0)), jax.device_get(losses(3.0))
  assert plain["rpn_box"] > 0
  np.testing.assert_allclose(tripled["rpn_box"], 3 * plain["rpn_box"], rtol=1e-5)
  for name in ("rpn_objectness", "roi_classifier", "roi_box"):
    np.testing.assert_allclose(tripled[name], plain[name], rtol=1e-5)
  with pytest.raises(ValueError, match="Unknown rpn_box_loss 'l2'"):
    jax.eval_shape(lambda: detection.FasterRCNN(**{**TINY_MODEL, "rpn_box_loss": "l2"}).init(
        jax.random.key(0), images, train=False))


def test_refined_proposals_are_the_rpn_proposals_regressed_by_the_refiner():
  images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
  # The refiner pools with its own sampling ratio (1), the RoI head with 2.
  refining = detection.FasterRCNN(**{**TINY_MODEL, "refine_proposals": True,
                                     "refine_sampling_ratio": 1})
  plain = detection.FasterRCNN(**TINY_MODEL)

  def regress(model, proposals):
    pyramid = model.fpn(model.backbone_module(images, False))
    _, deltas = model.proposal_refiner(model._pool(pyramid, proposals, 1))
    return ops.clip_boxes(ops.decode_boxes(deltas[:, :, 1], proposals, model.box_weights),
                          images.shape[1:3])

  @jax.jit
  def run():
    variables = refining.init(jax.random.key(0), images, train=False)
    # The refiner starts near the identity (deltas ~ 0); larger deltas make it move boxes.
    params = variables["params"]
    head = params["proposal_refiner"]["box_deltas"]
    params = {**params, "proposal_refiner": {**params["proposal_refiner"], "box_deltas": {
        **head, "kernel": head["kernel"] * 3000.0}}}
    variables = {**variables, "params": params}
    plain_variables = {**variables, "params": {
        name: value for name, value in params.items() if name != "proposal_refiner"}}
    unrefined = plain.apply(plain_variables, images, train=False)
    return (unrefined, refining.apply(variables, images, train=False),
            refining.apply(variables, unrefined["proposal_boxes"], method=regress))

  unrefined, refined, want = jax.device_get(run())
  # Scores, order and valid mask are the RPN's; only the boxes change.
  np.testing.assert_array_equal(refined["proposal_scores"], unrefined["proposal_scores"])
  np.testing.assert_array_equal(refined["proposal_valid"], unrefined["proposal_valid"])
  valid = unrefined["proposal_valid"]
  got = refined["proposal_boxes"]
  np.testing.assert_allclose(got[valid], want[valid], rtol=1e-5, atol=1e-4)
  assert np.all(got[~valid] == 0)
  moved = np.abs(got - unrefined["proposal_boxes"]).max(-1)[valid]
  assert np.mean(moved > 0.5) > 0.5


def test_proposal_refiner_trains_with_its_own_losses_and_needs_the_rpn():
  images = jax.random.uniform(jax.random.key(1), (1, 64, 64, 3))
  truth = dict(gt_boxes=jnp.array([[[8.0, 8.0, 30.0, 28.0], [30.0, 34.0, 60.0, 60.0]]]),
               gt_labels=jnp.array([[0, 2]]), gt_valid=jnp.array([[True, True]]))
  model = detection.FasterRCNN(**{**TINY_MODEL, "refine_proposals": True})

  @jax.jit
  def run():
    variables = model.init(jax.random.key(0), images, train=False)

    def refine_loss(params):
      outputs, _ = model.apply({**variables, "params": params}, images, train=True, **truth,
                               rngs={"sampling": jax.random.key(2)}, mutable=["batch_stats"])
      return outputs["losses"]["refine_objectness"] + outputs["losses"]["refine_box"], outputs

    return jax.value_and_grad(refine_loss, has_aux=True)(variables["params"])

  (loss, outputs), grads = run()
  assert set(outputs["losses"]) == {"rpn_objectness", "rpn_box", "refine_objectness",
                                    "refine_box", "roi_classifier", "roi_box"}
  assert np.isfinite(loss) and outputs["losses"]["refine_box"] > 0
  assert 0 <= outputs["metrics"]["refine_accuracy"] <= 1
  # The refiner's losses train the refiner and the features it pools, not the RPN whose
  # proposals it refines, not the RoI head that receives them.
  norm = lambda tree: sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(tree))
  for name in ("proposal_refiner", "backbone", "fpn"):
    assert norm(grads[name]) > 0, name
  for name in ("rpn_head", "box_head"):
    assert norm(grads[name]) == 0, name
  with pytest.raises(ValueError, match="refine_proposals=True"):
    jax.eval_shape(lambda: detection.FasterRCNN(
        **{**TINY_MODEL, "refine_proposals": True, "proposal_source": "data"}).init(
            jax.random.key(0), images, train=False, proposals=jnp.zeros((1, 20, 4)),
            proposal_valid=jnp.ones((1, 20), bool)))
