"""Proposal recall at IoU thresholds (``jaxvision.evaluation.proposals``)."""

import numpy as np
import pytest

from jaxvision.evaluation import proposals as recall_lib


def test_recall_counts_objects_whose_best_valid_proposal_reaches_each_threshold():
  # Image 0: object A [0, 10]^2 matched by a proposal at IoU 0.8 (x2 = 8), object B
  # matched exactly but only by an INVALID proposal, and a crowd object (left out).
  # Image 1: object C covered at IoU 0.6 (x2 = 6); image 2 is padding (skipped).
  boxes = np.zeros((3, 3, 4), np.float32)
  boxes[0, 0] = [0, 0, 10, 10]
  boxes[0, 1] = [20, 20, 30, 30]
  boxes[0, 2] = [40, 40, 50, 50]
  boxes[1, 0] = [0, 0, 10, 10]
  boxes[2, 0] = [0, 0, 10, 10]
  box_valid = np.array([[True, True, True], [True, False, False], [True, False, False]])
  is_crowd = np.array([[False, False, True], [False] * 3, [False] * 3])
  proposals = np.zeros((3, 2, 4), np.float32)
  proposals[0, 0] = [0, 0, 8, 10]
  proposals[0, 1] = [20, 20, 30, 30]
  proposals[1, 0] = [0, 0, 6, 10]
  proposals[2, 0] = [0, 0, 10, 10]
  proposal_valid = np.array([[True, False], [True, True], [True, True]])
  recall = recall_lib.ProposalRecall()
  recall.add(proposals, proposal_valid, boxes, box_valid, is_crowd,
             example_mask=np.array([True, True, False]))
  result = recall.result()
  assert result["objects"] == 3  # A, B, C
  np.testing.assert_allclose(result["recall50"], 2 / 3)  # A (0.8) and C (0.6)
  np.testing.assert_allclose(result["recall70"], 1 / 3)  # A
  np.testing.assert_allclose(result["recall90"], 0.0)
  np.testing.assert_allclose(result["mean_best_iou"], (0.8 + 0.0 + 0.6) / 3, rtol=1e-6)
  np.testing.assert_allclose(result["proposals_per_image"], (1 + 2) / 2)


def test_recall_without_objects_is_an_error():
  with pytest.raises(ValueError, match="no objects"):
    recall_lib.ProposalRecall().result()
