"""Run safety helpers of issue 9: result sets replaced whole, failed runs leave nothing behind, resumable
epoch streams, RNG-neutral evaluation."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from itr_common.checkpoint import rng_preserved
from itr_common.data.batching import EpochStream, ResumableBatchSampler, loader_generator
from itr_common.fileio import removed_on_failure, result_set, write_json_atomic


def test_result_set_commits_all_files_together(tmp_path):
    out = tmp_path / "out"
    with result_set(out) as files:
        write_json_atomic(files.path("scores.json"), {"r1": 1})
        files.path("results.bin").write_bytes(b"old")
        assert not (out / "scores.json").exists()  # nothing visible before the set is complete
    assert sorted(p.name for p in out.iterdir()) == ["results.bin", "scores.json"]
    with pytest.raises(OSError, match="disk full"), result_set(out) as files:
        files.path("results.bin").write_bytes(b"new")
        raise OSError("disk full")
    assert (out / "results.bin").read_bytes() == b"old"  # the old set, no mix
    assert sorted(p.name for p in out.iterdir()) == ["results.bin", "scores.json"]  # no staging left
    stale = out / ".result-set-dead.tmp"
    stale.mkdir()  # left by a SIGKILLed writer: removed by the next set
    with result_set(out) as files:
        files.path("results.bin").write_bytes(b"new")
    assert (out / "results.bin").read_bytes() == b"new" and not stale.exists()
    with pytest.raises(ValueError), result_set(out) as files:
        files.path("../escape.json")


def test_removed_on_failure_before_keep_only(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), removed_on_failure(out):
        (out / "log").mkdir(parents=True)
        (out / "log" / "log.txt").write_text("x")
        raise RuntimeError("crash before the first checkpoint")
    assert not out.exists()
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    with pytest.raises(KeyboardInterrupt), removed_on_failure(out):
        (out / "ckpt").mkdir()
        raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    with pytest.raises(RuntimeError), removed_on_failure(out) as keep:
        (out / "ckpt").mkdir()
        keep()  # the first checkpoint exists: a crash now keeps everything for --resume
        raise RuntimeError("later crash")
    assert sorted(p.name for p in out.iterdir()) == ["ckpt", "mine.txt"]


class _Items(torch.utils.data.Dataset):
    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return 7

    def __getitem__(self, i):
        return (self.epoch, i)


def _stream(seed=3):
    data = _Items()
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=seed)
    batches = ResumableBatchSampler(sampler, 1)
    loader = DataLoader(data, batch_sampler=batches, collate_fn=lambda items: items[0],
                        generator=loader_generator(seed))
    return EpochStream(loader, sampler, batches, [data])


def test_epoch_stream_resumes_at_any_batch():
    full = _stream()
    it = iter(full)
    reference = [next(it) for _ in range(20)]  # crosses two epoch boundaries
    assert {epoch for epoch, _ in reference} == {0, 1, 2}
    assert sorted(i for e, i in reference if e == 0) == list(range(7))
    for cut in (0, 3, 7, 10, 19):
        first = _stream()
        it = iter(first)
        head = [next(it) for _ in range(cut)]
        resumed = _stream()
        resumed.load_state(first.state())
        it = iter(resumed)
        assert head + [next(it) for _ in range(20 - cut)] == reference, cut


def test_rng_preserved_leaves_every_generator_where_it_was():
    torch.manual_seed(0)
    random.seed(0)
    with rng_preserved():
        torch.rand(3)
        random.random()
    after = (torch.rand(1), random.random())
    torch.manual_seed(0)
    random.seed(0)
    assert (torch.rand(1), random.random()) == after
