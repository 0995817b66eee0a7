from __future__ import annotations

import logging
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import itr_common.tensorboard_logger as tb_logger
from itr_common.logging import (
    AverageMeter,
    DefaultTensorBoard,
    LogCollector,
    TensorBoardLogger,
    get_logger,
    progress,
    setup_logging,
)


def _scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_module_is_ours_and_stdlib_logging_intact():
    import itr_common.logging as ours

    assert ours.__name__ == "itr_common.logging"
    assert logging.getLogger is get_logger.__globals__["_logging"].getLogger
    assert get_logger("itr.test") is logging.getLogger("itr.test")


def test_tensorboard_logger_writes_scalars(tmp_path):
    with TensorBoardLogger(tmp_path) as tb:
        tb.log_value("train/loss", 1.5, step=3)
        tb.log_value("train/loss", torch.tensor(0.25), step=7)
        tb.log_dict({"r1": 10.0, "r5": 30.0}, step=7, prefix="val/")
        tb.log_value("auto", 4.0)
        tb.log_value("auto", 5.0)
    scalars = _scalars(tmp_path)
    assert scalars["train/loss"] == [(3, 1.5), (7, 0.25)]
    assert scalars["val/r1"] == [(7, 10.0)] and scalars["val/r5"] == [(7, 30.0)]
    assert scalars["auto"] == [(0, 4.0), (1, 5.0)]


def test_disabled_logger_writes_nothing(tmp_path):
    tb = TensorBoardLogger(tmp_path / "off", enabled=False)
    tb.log_value("x", 1.0, step=0)
    tb.close()
    assert not (tmp_path / "off").exists()


def test_tensorboard_logger_shim_api(tmp_path):
    assert tb_logger.__all__ == ["configure", "log_value"]
    tb_logger.configure(tmp_path / "run1", flush_secs=5)
    tb_logger.log_value("epoch", 2, step=100)
    tb_logger.configure(tmp_path / "run2")  # reconfiguring closes run1 and starts run2
    tb_logger.log_value("lr", 0.0002, step=100)
    tb_logger.default.close()
    assert _scalars(tmp_path / "run1") == {"epoch": [(100, 2.0)]}
    assert _scalars(tmp_path / "run2")["lr"] == [(100, pytest.approx(0.0002))]


def test_log_value_before_configure():
    with pytest.raises(RuntimeError, match="before tensorboard_logger.configure"):
        DefaultTensorBoard().log_value("x", 1.0, step=0)


def test_average_meter_matches_hand_computation():
    meter = AverageMeter()
    meter.update(7)  # n=0 (the originals' default): recorded, not averaged
    assert (meter.val, meter.avg, meter.count, str(meter)) == (7, 0, 0, "7")
    meter.update(2.0, n=2)
    meter.update(5.0, n=1)
    assert meter.val == 5.0 and meter.avg == pytest.approx(3.0)  # (2*2 + 5) / 3
    assert str(meter) == "5.0000 (3.0000)"
    meter.reset()
    assert (meter.val, meter.sum, meter.count) == (0, 0, 0)


def test_log_collector_line_and_tb_log(tmp_path):
    collector = LogCollector()
    collector.update("Eit", 10)
    collector.update("Le", 4.0, n=2)
    collector.update("Le", 1.0, n=2)
    assert str(collector) == "Eit 10  Le 1.0000 (2.5000)"
    with TensorBoardLogger(tmp_path) as tb:
        collector.tb_log(tb, prefix="train/", step=10)
    assert _scalars(tmp_path) == {"train/Eit": [(10, 10.0)], "train/Le": [(10, 1.0)]}


def test_progress_silent_on_rank_1(capsys):
    assert list(progress(range(4), desc="encode", rank=1)) == [0, 1, 2, 3]
    assert capsys.readouterr().err == ""
    assert list(progress(range(4), desc="encode", rank=0, file=sys.stderr)) == [0, 1, 2, 3]
    assert "encode" in capsys.readouterr().err


def test_progress_default_rank_single_process(capsys):
    bar = progress(total=3, desc="steps", file=sys.stderr)
    bar.update(3)
    bar.close()
    assert "steps" in capsys.readouterr().err


def test_setup_logging_levels_and_file(tmp_path):
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    try:
        log_file = tmp_path / "log" / "log.txt"
        setup_logging(rank=0, log_file=log_file)
        setup_logging(rank=0, log_file=log_file)  # idempotent: no duplicated handlers
        get_logger("itr.test").info("hello %d", 5)
        ours = [h for h in root.handlers if h not in saved_handlers]
        assert root.level == logging.INFO and len(ours) == 2
        for handler in ours:
            handler.flush()
        lines = log_file.read_text().splitlines()
        assert len(lines) == 1 and lines[0].endswith("INFO - itr.test - hello 5")

        setup_logging(rank=1, log_file=tmp_path / "rank1.txt")
        assert root.level == logging.WARNING
        assert not (tmp_path / "rank1.txt").exists()  # only rank 0 writes the log file
    finally:
        for handler in [h for h in root.handlers if h not in saved_handlers]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved_level)
