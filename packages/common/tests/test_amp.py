from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from itr_common.amp import Amp, AmpConfig
from itr_common.errors import UserError


def _train_step(amp: Amp, max_grad_norm: float | None = None):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    x = torch.randn(5, 4)
    with amp.autocast():
        out = model(x)
        loss = out.float().pow(2).mean()
    amp.backward(loss)
    norm = amp.step(optimizer, max_grad_norm=max_grad_norm)
    return model, before, out, norm


def test_mapping_of_original_switches():
    assert AmpConfig.from_original(device="cpu") == AmpConfig(False, "cpu", torch.float32, False, "O0")
    # apex semantics: the opt level only matters when fp16 is on
    assert not AmpConfig.from_original(fp16=False, opt_level="O2", device="cpu").enabled
    assert not AmpConfig.from_original(fp16=True, opt_level="O0", device="cpu").enabled
    for level in ("O1", "O2", "O3"):
        cfg = AmpConfig.from_original(fp16=True, opt_level=level, device="cpu")
        assert cfg == AmpConfig(True, "cpu", torch.bfloat16, False, level)
    assert AmpConfig.from_original(fp16=True, device="cpu").opt_level == "O2"  # UNITER's `fp16: true`


@pytest.mark.parametrize("level", ["O4", "o1", "2", ""])
def test_invalid_opt_level(level):
    with pytest.raises(UserError, match=f"--fp16_opt_level: expected one of O0, O1, O2, O3, found '{level}'"):
        AmpConfig.from_original(fp16=True, opt_level=level, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is missing")
def test_cuda_requested_without_cuda():
    with pytest.raises(UserError, match="CUDA"):
        AmpConfig.from_original(fp16=True, device="cuda")


def test_cpu_bf16_step_changes_weights():
    amp = Amp(AmpConfig.from_original(fp16=True, opt_level="O1", device="cpu"))
    assert amp.enabled and not amp.scaler.is_enabled()
    model, before, out, norm = _train_step(amp)
    assert out.dtype == torch.bfloat16
    assert model.weight.dtype == torch.float32  # weights stay fp32 (no apex O2 casting)
    assert not torch.equal(model.weight, before)
    assert torch.isfinite(norm) and norm > 0


def test_o0_is_fp32_and_matches_plain_step():
    amp = Amp(AmpConfig.from_original(fp16=True, opt_level="O0", device="cpu"))
    model, before, out, norm = _train_step(amp)
    assert out.dtype == torch.float32

    torch.manual_seed(0)
    plain = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    plain(x).pow(2).mean().backward()
    expected_norm = torch.cat([p.grad.flatten() for p in plain.parameters()]).norm()
    with torch.no_grad():
        for p in plain.parameters():
            p -= 0.1 * p.grad
    torch.testing.assert_close(model.weight, plain.weight)
    torch.testing.assert_close(norm, expected_norm)


def test_step_clips_to_max_grad_norm():
    amp = Amp(AmpConfig.from_original(device="cpu"))
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    # loss = 3*w0 + 4*w1 -> gradient (3, 4), norm 5; clipped to norm 1 -> (0.6, 0.8)
    amp.backward(model(torch.tensor([[3.0, 4.0]])).sum())
    norm = amp.step(optimizer, max_grad_norm=1.0)
    assert norm.item() == pytest.approx(5.0)
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[-0.6, -0.8]]), rtol=1e-5, atol=1e-5)


def test_state_dict_round_trip_weights_only():
    amp = Amp(AmpConfig.from_original(fp16=True, device="cpu"))
    buffer = io.BytesIO()
    torch.save(amp.state_dict(), buffer)
    buffer.seek(0)
    restored = Amp(AmpConfig.from_original(fp16=True, device="cpu"))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.state_dict() == amp.state_dict() == {"scaler": {}}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_with_scaler_resumes():
    amp = Amp(AmpConfig.from_original(fp16=True, opt_level="O2", device="cuda"))
    assert amp.config.dtype == torch.float16 and amp.scaler.is_enabled()
    model = nn.Linear(4, 3).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    with amp.autocast():
        out = model(torch.randn(5, 4, device="cuda"))
    assert out.dtype == torch.float16
    amp.backward(out.float().pow(2).mean())
    amp.step(optimizer, max_grad_norm=2.0)
    assert not torch.equal(model.weight, before)
    state = amp.state_dict()
    assert state["scaler"]["scale"] > 0
    other = Amp(amp.config)
    other.load_state_dict(state)
    assert other.scaler.get_scale() == amp.scaler.get_scale()
