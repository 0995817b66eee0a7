"""itr_common.training helpers shared by the trainers: the learning-rate step decay and the validate-then-save
protocol (rank 0 validates without touching the training RNG, every rank saves with rank 0's verdict)."""

from __future__ import annotations

import pytest
import torch

from itr_common.dist import DistInfo
from itr_common.training import step_decay_lr, validate_on_main_then_save


def test_step_decay_lr_divides_by_ten_every_lr_update_epochs():
    assert [step_decay_lr(2e-4, epoch, 15) for epoch in (0, 14, 15, 29, 30)] == pytest.approx(
        [2e-4, 2e-4, 2e-5, 2e-5, 2e-6])


@pytest.mark.parametrize("verdict", [True, False])
def test_rank_0_validates_without_moving_the_rng_and_passes_its_verdict_to_save(verdict):
    saved: list[bool] = []

    def validate() -> bool:
        torch.rand(5)  # an evaluation that draws (dropout off, a sampler...) must not shift training's stream
        return verdict

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    validate_on_main_then_save(DistInfo(0, 1, 0, torch.device("cpu"), None), validate, saved.append)
    assert saved == [verdict]
    assert torch.equal(torch.rand(3), expected)


def test_other_ranks_do_not_validate_and_save_with_the_broadcast_verdict():
    saved: list[bool] = []

    def validate() -> bool:
        raise AssertionError("only rank 0 validates")

    # no process group: the broadcast returns this rank's value (False), as rank 0's would be under torchrun
    validate_on_main_then_save(DistInfo(1, 2, 1, torch.device("cpu"), None), validate, saved.append)
    assert saved == [False]
