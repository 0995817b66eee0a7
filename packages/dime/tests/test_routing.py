"""Routers and path aggregation on hand-computed cases (LgQu/DIME Router.py, DynamicInteraction.py)."""

from __future__ import annotations

import math

import torch

from itr_dime.router import Router, router_activation
from itr_dime.routing import aggregate_last_layer, aggregate_paths


def test_router_activation_is_relu_of_tanh():
    out = router_activation(torch.tensor([-1.0, 0.0, 0.5, 3.0]))
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, math.tanh(0.5), math.tanh(3.0)]))


def test_router_starts_open_with_bias_1_5():
    router = Router(num_out_path=4, embed_size=3, hid=5)
    torch.testing.assert_close(router.mlp[2].bias, torch.full((4,), 1.5))
    torch.nn.init.zeros_(router.mlp[2].weight)
    out = router(torch.randn(2, 7, 3))
    torch.testing.assert_close(out, torch.full((2, 4), math.tanh(1.5)))


def test_router_routes_the_mean_of_the_locals():
    router = Router(num_out_path=1, embed_size=2, hid=2)
    torch.nn.init.eye_(router.mlp[0].weight)
    torch.nn.init.zeros_(router.mlp[0].bias)
    torch.nn.init.ones_(router.mlp[2].weight)
    torch.nn.init.zeros_(router.mlp[2].bias)
    x = torch.tensor([[[1.0, -2.0], [3.0, 4.0]]])  # mean over locals [2, 1] -> ReLU -> sum 3
    torch.testing.assert_close(router(x), torch.tensor([[math.tanh(3.0)]]))


def _cells(values):
    return [torch.full((1, 1, 1, 1), float(v)) for v in values]


def test_aggregate_paths_normalises_gates_per_output_path():
    embs = _cells([1, 2, 3, 4])
    # gates (a, b, P=2) per cell: output 0 gets [0.5, 0.5, 0, 1.0]; output 1 is closed everywhere
    probs = [torch.tensor([[[0.5, 0.0]]]), torch.tensor([[[0.5, 0.0]]]), torch.tensor([[[0.0, 0.0]]]),
             torch.tensor([[[1.0, 0.0]]])]
    outputs, gates = aggregate_paths(embs, probs)
    assert gates.shape == (1, 1, 2, 4)
    expected_gates = torch.tensor([0.5, 0.5, 0.0, 1.0]) / (2.0 + 1e-8)
    torch.testing.assert_close(gates[0, 0, 0], expected_gates)
    torch.testing.assert_close(outputs[0].item(), 0.25 * 1 + 0.25 * 2 + 0.5 * 4)
    # output 1: raw gates sum to 0 < 1e-4 -> the identity cell's output is passed through
    torch.testing.assert_close(outputs[1].item(), 1.0)


def test_aggregate_paths_skip_adds_to_tiny_but_normalised_gates():
    embs = _cells([1, 2, 3, 4])
    probs = [torch.tensor([[[3e-5]]]), torch.tensor([[[0.0]]]), torch.tensor([[[0.0]]]), torch.tensor([[[0.0]]])]
    outputs, _ = aggregate_paths(embs, probs)
    # the gate normalises to ~1 and the skip rule (sum < 1e-4) adds emb_0 once more, as in the original
    torch.testing.assert_close(outputs[0].item(), 3e-5 / (3e-5 + 1e-8) + 1.0)


def test_aggregate_paths_broadcasts_per_image_gates_over_pairs():
    embs = [torch.ones(2, 1, 3, 4), torch.ones(2, 5, 3, 4), torch.ones(2, 1, 3, 4), torch.ones(2, 5, 3, 4)]
    probs = [torch.rand(2, 1, 4) + 0.1 for _ in range(4)]
    outputs, gates = aggregate_paths(embs, probs)
    assert len(outputs) == 4 and all(o.shape == (2, 5, 3, 4) for o in outputs)
    torch.testing.assert_close(gates.sum(-1), torch.ones(2, 1, 4), atol=1e-6, rtol=0)


def test_aggregate_last_layer_formula_and_per_cell_skip():
    embs = _cells([1, 2, 3, 4])
    inputs = _cells([10, 20, 30, 40])
    gate_values = [0.5, 0.0, 1e-5, 0.3]  # cells 1 and 2 are below 1e-4 / 4 and pass their input through
    probs = [torch.tensor([[[g]]]) for g in gate_values]
    out, gates = aggregate_last_layer(embs, inputs, probs)
    numerator = 0.5 * 1 + 0.0 * 2 + 1e-5 * 3 + 0.3 * 4 + 20 + 30
    denominator = (1 + 1) + (0.5 + 0.0 + 1e-5 + 0.3)
    torch.testing.assert_close(out.item(), numerator / denominator)
    assert gates.shape == (1, 1, 1, 4)
    torch.testing.assert_close(gates.flatten(), torch.tensor(gate_values))


def test_aggregate_last_layer_all_open_is_gate_weighted_mean():
    embs = _cells([1, 2, 3, 4])
    probs = [torch.tensor([[[g]]]) for g in (0.1, 0.2, 0.3, 0.4)]
    out, _ = aggregate_last_layer(embs, _cells([9, 9, 9, 9]), probs)
    torch.testing.assert_close(out.item(), (0.1 + 0.4 + 0.9 + 1.6) / 1.0)
