"""Ranking loss with extra negatives and the path regularisation, on hand-computed numbers."""

from __future__ import annotations

import torch
from dime_testlib import train_argv

import itr_dime.losses
from itr_dime.losses import dime_loss, path_regularization_loss, ranking_loss
from itr_dime.train import train


def test_ranking_loss_with_extra_sentences():
    # B = 2 images, 2 paired captions + 2 extra captions (--extra_stc 1): scores (2, 4)
    scores = torch.tensor([[0.9, 0.3, 0.8, 0.1], [0.2, 0.7, 0.4, 0.75]])
    # caption retrieval: row 0 hardest negative 0.8 -> 0.1; row 1 hardest 0.75 -> 0.25
    # image retrieval (paired columns only): column 0 vs 0.2 -> 0, column 1 vs 0.3 -> 0
    torch.testing.assert_close(ranking_loss(scores, 0.2, max_violation=True), torch.tensor(0.35))
    # sum of violations: row 0 also 0.3 - 0.9 + 0.2 < 0; row 1: 0.4 -> 0 (0.4-0.7+0.2 < 0), 0.75 -> 0.25
    torch.testing.assert_close(ranking_loss(scores, 0.2, max_violation=False), torch.tensor(0.35))
    scores[0, 3] = 0.85  # a second violating extra negative for image 0
    torch.testing.assert_close(ranking_loss(scores, 0.2, max_violation=True), torch.tensor(0.15 + 0.25))
    torch.testing.assert_close(ranking_loss(scores, 0.2, max_violation=False), torch.tensor(0.1 + 0.15 + 0.25))


def test_ranking_loss_with_extra_images():
    # B = 2 captions, 2 paired images + 2 extra images (--extra_img 1): scores (4, 2)
    scores = torch.tensor([[0.9, 0.3], [0.2, 0.7], [0.8, 0.1], [0.4, 0.6]])
    # image retrieval: column 0 hardest 0.8 -> 0.1; column 1 hardest 0.6 -> 0.1
    # caption retrieval (paired rows only): row 0 vs 0.3 -> 0; row 1 vs 0.2 -> 0
    torch.testing.assert_close(ranking_loss(scores, 0.2, max_violation=True), torch.tensor(0.2))


def test_path_regularization_hand_case():
    sim_paths = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    bert = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # Gram [[1, .6], [.6, 1]]
    # (0.5 - 0.6)^2 twice = 0.02, divided by --batch_size 2
    torch.testing.assert_close(path_regularization_loss(sim_paths, bert, 2), torch.tensor(0.01))
    torch.testing.assert_close(path_regularization_loss(sim_paths, bert, 4), torch.tensor(0.005))


def test_dime_loss_combines_with_trade_off_and_cuts_extra_captions():
    scores = torch.tensor([[0.9, 0.3, 0.8, 0.1], [0.2, 0.7, 0.4, 0.75]])
    sim_paths = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    bert = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [1.0, 0.0]])  # 2 paired + 2 extra captions
    out = dime_loss(scores, sim_paths, bert, margin=0.2, max_violation=True, trade_off=0.5, batch_size=2)
    torch.testing.assert_close(out.rank, torch.tensor(0.35))
    torch.testing.assert_close(out.path, torch.tensor(0.01))
    torch.testing.assert_close(out.total, torch.tensor(0.35 + 0.5 * 0.01))


def test_trainer_sums_the_violations_for_the_warm_up_epochs_then_takes_the_hardest(world, tmp_path, monkeypatch):
    seen: list[bool] = []
    loss = itr_dime.losses.contrastive_loss

    def recording(scores, margin, max_violation, n_pairs=None):
        seen.append(max_violation)
        return loss(scores, margin, max_violation, n_pairs)

    monkeypatch.setattr(itr_dime.losses, "contrastive_loss", recording)
    train(train_argv(world, tmp_path / "run", "f30k_precomp", None, "--num_epochs", "3", "--sum_violation_epochs",
                     "2", "--batch_size", "48"))
    per_epoch = len(seen) // 3
    assert per_epoch > 0 and seen == [False] * (2 * per_epoch) + [True] * per_epoch
