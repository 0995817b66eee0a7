"""itr_common.losses: VSE++ triplet loss on hand-computed cases, DIME's extra negatives, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from itr_common.errors import UserError
from itr_common.losses import ContrastiveLoss, contrastive_loss, max_violation_at

MARGIN = 0.2


def scores_of(rows):
    return torch.tensor(rows, dtype=torch.float64)


def brute_force_loss(scores: torch.Tensor, margin: float, max_violation: bool, b: int) -> float:
    """Triplet by triplet: paired images query all captions, paired captions query all images."""
    n_img, n_cap = scores.shape
    total = 0.0
    for i in range(b):  # caption retrieval
        costs = [max(0.0, margin + scores[i, j].item() - scores[i, i].item()) for j in range(n_cap) if j != i]
        total += max(costs, default=0.0) if max_violation else sum(costs)
    for j in range(b):  # image retrieval
        costs = [max(0.0, margin + scores[i, j].item() - scores[j, j].item()) for i in range(n_img) if i != j]
        total += max(costs, default=0.0) if max_violation else sum(costs)
    return total


def test_2x2_single_violation():
    # cost_s: (0,1) 0.2+0.4-0.5 = 0.1, (1,0) 0.2+0.2-0.6 < 0; cost_im: (0,1) 0.2+0.4-0.6 = 0, (1,0) < 0
    scores = scores_of([[0.5, 0.4], [0.2, 0.6]])
    for hard in (False, True):
        assert contrastive_loss(scores, MARGIN, hard).item() == pytest.approx(0.1)


def test_3x3_sum_and_hardest_negative():
    scores = scores_of([[0.8, 0.5, 0.7], [0.4, 0.6, 0.3], [0.1, 0.65, 0.9]])
    # cost_s (per image row, minus its diagonal): only (0,2) = 0.2+0.7-0.8 = 0.1
    # cost_im (per caption column): (0,1) = 0.2+0.5-0.6 = 0.1, (2,1) = 0.2+0.65-0.6 = 0.25, (0,2) = 0
    assert contrastive_loss(scores, MARGIN, max_violation=False).item() == pytest.approx(0.1 + 0.1 + 0.25)
    assert contrastive_loss(scores, MARGIN, max_violation=True).item() == pytest.approx(0.1 + 0.25)


def test_margin_zero_and_diagonal_masked():
    scores = scores_of([[1.0, 0.0], [0.0, 1.0]])
    assert contrastive_loss(scores, 0.0).item() == 0.0
    # with a large margin the diagonal itself would cost `margin` if it were not masked
    assert contrastive_loss(scores, 2.0).item() == pytest.approx(4 * (2.0 - 1.0))


EXTRA_STC = [[0.7, 0.4, 0.6, 0.9], [0.5, 0.8, 0.75, 0.1]]  # B = 2 pairs + 2 extra captions (k = 1)


def test_extra_captions_are_negatives_for_image_queries_only():
    scores = scores_of(EXTRA_STC)
    # image 0: (0,2) 0.2+0.6-0.7 = 0.1, (0,3) 0.2+0.9-0.7 = 0.4; image 1: (1,2) 0.2+0.75-0.8 = 0.15
    # captions 0, 1 query images 0, 1 only: (1,0) 0.2+0.5-0.7 = 0, (0,1) 0.2+0.4-0.8 < 0
    assert contrastive_loss(scores, MARGIN, max_violation=False).item() == pytest.approx(0.1 + 0.4 + 0.15)
    assert contrastive_loss(scores, MARGIN, max_violation=True).item() == pytest.approx(0.4 + 0.15)
    assert contrastive_loss(scores, MARGIN, True, n_pairs=2).item() == pytest.approx(0.55)


def test_extra_images_mirror_extra_captions():
    scores = scores_of(EXTRA_STC).T  # (B*(1+k), B): 2 paired images + 2 extra images
    assert contrastive_loss(scores, MARGIN, max_violation=False).item() == pytest.approx(0.65)
    assert contrastive_loss(scores, MARGIN, max_violation=True).item() == pytest.approx(0.55)


@pytest.mark.parametrize("shape", [(5, 5), (4, 12), (12, 4)])
@pytest.mark.parametrize("hard", [False, True])
def test_matches_brute_force_triplets(shape, hard):
    scores = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.3
    b = min(shape)
    assert contrastive_loss(scores, MARGIN, hard).item() == pytest.approx(brute_force_loss(scores, MARGIN, hard, b))


def test_explicit_pairs_with_extra_rows_and_columns():
    scores = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.3
    for hard in (False, True):
        got = contrastive_loss(scores, MARGIN, hard, n_pairs=3).item()
        assert got == pytest.approx(brute_force_loss(scores, MARGIN, hard, 3))


def test_bad_shapes():
    with pytest.raises(UserError, match="n_pairs"):
        contrastive_loss(torch.zeros(2, 4), n_pairs=3)
    with pytest.raises(UserError, match="2-D"):
        contrastive_loss(torch.zeros(4))
    with pytest.raises(UserError, match="ContrastiveLoss"):
        ContrastiveLoss()(torch.zeros(2, 3), torch.zeros(2, 4))


def test_module_equals_function_and_gradients_flow():
    gen = torch.Generator().manual_seed(2)
    im = F.normalize(torch.randn(6, 8, generator=gen), dim=1).requires_grad_()
    s = F.normalize(torch.randn(6, 8, generator=gen), dim=1).requires_grad_()
    for hard in (False, True):
        criterion = ContrastiveLoss(margin=MARGIN, max_violation=hard)
        loss = criterion(im, s)
        assert loss.item() == pytest.approx(contrastive_loss(im @ s.T, MARGIN, hard).item())
        assert loss.item() > 0
        im.grad = s.grad = None
        loss.backward()
        assert im.grad is not None and s.grad is not None
        assert torch.isfinite(im.grad).all() and im.grad.abs().sum() > 0 and s.grad.abs().sum() > 0
    assert "max_violation=True" in repr(ContrastiveLoss(max_violation=True))


def test_gradient_of_hardest_negative_hits_only_that_entry():
    # no hinge exactly at 0 here; active ones: cost_s (0,2) = 0.12 and the column-1 maximum cost_im (2,1) = 0.25
    scores = scores_of([[0.8, 0.5, 0.72], [0.35, 0.6, 0.3], [0.1, 0.65, 0.95]]).requires_grad_()
    loss = contrastive_loss(scores, MARGIN, max_violation=True)
    assert loss.item() == pytest.approx(0.12 + 0.25)
    loss.backward()
    # each active hinge adds +1 on its negative and -1 on its positive
    expected = torch.tensor([[-1.0, 0.0, 1.0], [0.0, -1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(scores.grad, expected)


def test_from_scores_with_extra_captions_through_the_module():
    criterion = ContrastiveLoss(margin=MARGIN, max_violation=True)
    assert criterion.from_scores(scores_of(EXTRA_STC), n_pairs=2).item() == pytest.approx(0.55)
    # extra caption embeddings appended after the batch's captions
    im = torch.eye(3)[:2]
    s = torch.cat([torch.eye(3)[:2], torch.eye(3)[:1]])  # third caption duplicates image 0's: cost 0.2
    assert criterion(im, s).item() == pytest.approx(MARGIN + 0.0 + 0.0)


def test_max_violation_at_sums_during_the_warm_up_then_follows_the_flag():
    assert [max_violation_at(epoch, True, 2) for epoch in range(4)] == [False, False, True, True]
    assert [max_violation_at(epoch, True) for epoch in range(3)] == [True, True, True]  # the originals' schedule
    assert not any(max_violation_at(epoch, False, 1) for epoch in range(3))  # --max_violation False: sum throughout


def test_equal_scores_cost_twice_the_margin_per_pair_with_either_loss_form():
    # the collapsed state the warm-up avoids: a batch of 8 with equal scores costs 2 x 0.2 x 8 = 3.2 (the loss DIME
    # sat at on a 400-image world); the summed form charges every negative, 2 x 0.2 x 7 x 8
    scores = torch.full((8, 8), 0.3, dtype=torch.float64)
    assert contrastive_loss(scores, MARGIN, max_violation=True).item() == pytest.approx(3.2)
    assert contrastive_loss(scores, MARGIN, max_violation=False).item() == pytest.approx(3.2 * 7)
