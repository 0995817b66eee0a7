"""The alignment head, VSE++, ListNet and the loss weighting on small hand-computed cases.

(The same functions were also checked against mesnico/ALADIN's alad/loss.py on random inputs, every
aggregation and distillation mode, with and without the evaluation's 71-slot padding.)
"""

from __future__ import annotations

import math

import pytest
import torch

from itr_aladin.losses import alignment_scores, combine_losses, contrastive, distillation_loss, listnet


def _unit(*xy: float) -> list[float]:
    n = math.hypot(*xy)
    return [v / n for v in xy]


def _sets():
    """One image: regions [r0 (dropped), (1,0), (0,1)]; one caption: [CLS, w1=(1,0), w2=(1,1)/√2, last, SEP]."""
    im = torch.tensor([[[5.0, 5.0], [2.0, 0.0], [0.0, 3.0]]])
    s = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 4.0], [7.0, -7.0]]])
    return im, s


def test_mrsw_drops_first_region_and_cls_last_wordpiece_sep():
    im, s = _sets()
    # w1: max(cos((1,0),(1,0)), cos((0,1),(1,0))) = 1; w2: max(1/√2, 1/√2) = 1/√2
    score = alignment_scores(im, s, [3], [5], "MrSw")
    assert score.shape == (1, 1)
    assert score.item() == pytest.approx(1 + 1 / math.sqrt(2), abs=1e-6)


def test_other_aggregations_by_hand():
    im, s = _sets()
    a = 1 / math.sqrt(2)
    # A (regions x words) = [[1, a], [0, a]]
    assert alignment_scores(im, s, [3], [5], "sum").item() == pytest.approx(1 + 2 * a, abs=1e-6)
    assert alignment_scores(im, s, [3], [5], "mean").item() == pytest.approx((1 + 2 * a) / 4, abs=1e-6)
    assert alignment_scores(im, s, [3], [5], "MwSr").item() == pytest.approx(1 + a, abs=1e-6)
    assert alignment_scores(im, s, [3], [5], "symm").item() == pytest.approx(2 + 2 * a, abs=1e-6)
    assert alignment_scores(im, s, [3], [5], "MrAVGw").item() == pytest.approx((1 + a) / 2, abs=1e-6)


def test_padding_is_zero_and_takes_part_in_the_max():
    # regions [dropped, (-1, 0)], one word (1, 0): cos = -1; a padded region (zero) floors the max at 0
    im = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [-1.0, 0.0], [-1.0, 0.1]]])
    s = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    scores = alignment_scores(im, s, [2, 3], [4], "MrSw")
    assert scores[0, 0].item() == pytest.approx(0.0)  # image 0 is padded in the batch
    assert scores[1, 0].item() == pytest.approx(max(-1.0, _unit(-1.0, 0.1)[0]), abs=1e-6)
    # the evaluation stores every set in 71 slots: every image has a zero region, so both floor at 0
    padded = alignment_scores(im, s, [2, 3], [4], "MrSw", padded_len=(71, 71))
    assert padded[:, 0].tolist() == [0.0, 0.0]


def test_vsepp_max_violation_on_a_2x2_matrix():
    scores = torch.tensor([[0.9, 0.8], [0.1, 0.2]])
    # caption retrieval: row 0: 0.2 + 0.8 - 0.9 = 0.1; row 1: 0.2 + 0.1 - 0.2 = 0.1
    # image retrieval: col 0: 0.2 + 0.1 - 0.9 < 0 -> 0; col 1: 0.2 + 0.8 - 0.2 = 0.8
    assert contrastive(scores, 0.2, True).item() == pytest.approx(0.1 + 0.1 + 0.0 + 0.8)
    assert contrastive(scores, 0.2, False).item() == pytest.approx(1.0)  # 2x2: sum == max


def test_listnet_by_hand_and_teacher_detached():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    student = torch.tensor([[0.5, 0.0], [0.0, 0.5]], requires_grad=True)
    loss = listnet(teacher, student)
    p = 1 / (1 + math.exp(-1.0))  # softmax of [1, 0]
    q = 1 / (1 + math.exp(-3.0))  # softmax of 6 * [0.5, 0]
    one_way = -(p * math.log(q + 1e-10) + (1 - p) * math.log(1 - q + 1e-10))
    assert loss.item() == pytest.approx(2 * one_way, rel=1e-5)
    loss.backward()
    assert teacher.grad is None and student.grad is not None
    assert distillation_loss(teacher, student, "listnet").item() == pytest.approx(loss.item())


def test_fixed_and_auto_loss_weights():
    losses = {"alignment": torch.tensor(2.0), "distillation": torch.tensor(3.0)}
    assert combine_losses(losses, {"alignment": 1.0, "distillation": 0.1}, auto=False).item() == pytest.approx(2.3)
    w = {"alignment": torch.tensor([-2.3]), "distillation": torch.tensor([-2.3])}
    expected = 0.5 * (2 * math.exp(2.3) - 2.3 + 3 * math.exp(2.3) - 2.3)
    assert combine_losses(losses, w, auto=True).item() == pytest.approx(expected, rel=1e-6)
