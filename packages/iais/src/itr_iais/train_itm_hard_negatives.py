"""``train_itm_hard_negatives.py``: fine-tune UNITER for image-text retrieval with hard negatives (+ IAIS).

    python train_itm_hard_negatives.py --config config/train-itm-flickr-base-8gpu-hn.json [--IAIS singular]
    torchrun --nproc_per_node 8 train_itm_hard_negatives.py --config ...   # was: horovodrun -np 8 python ...

Each iteration trains one image-sampled group (an image against ``negative_size + 1`` texts, IAIS
``V-`` side) and one text-sampled group (a text against as many images, ``L-`` side); each group
keeps its positive and ``hard_neg_size`` hardest negatives. Gradients are accumulated over
``train_batch_size`` iterations, averaged over processes, clipped to ``grad_norm`` and applied with
the warmup/linear-decay learning rate. Loss per group: ``mean(rank hinge) / train_batch_size`` plus,
with ``--IAIS``, ``IAIS * exp(5 * (global_step / num_train_steps - 1))``.

Outputs (rank 0), as the original: ``{output_dir}/log/{hps.json, model.json, log.txt}`` + TensorBoard
events, ``{output_dir}/ckpt/model_step_{N}.pt`` (plain state dict, original keys) and ours
``train_state_{N}.pt`` (step, optimizer, AMP scaler, RNG, data positions) for ``--resume``, with N processes
each rank R > 0's own RNG and data positions in ``train_state_{N}.rank{R}.pt`` (``itr_common.rank_state``: a
resume with another process count or a missing rank file is refused in one line; a SIGINT/SIGTERM to any rank
stops every rank at the same update, where they agree on it: ``SaveOnSignal.at_boundary``); at the end the last
update's train state (when no validation saved it), the final validation, ``model_step_{N}_final.pt`` and the test
evaluation in ``results_test/`` (a kill during these evaluations loses no update: ``--resume`` runs them again).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler

from itr_common import dist
from itr_common.amp import Amp, AmpConfig
from itr_common.checkpoint import (
    SaveOnSignal,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    rng_preserved,
    save_atomic,
    strip_module_prefix,
)
from itr_common.data.batching import EpochStream, ResumableBatchSampler, loader_generator
from itr_common.data.uniter_lmdb import DetectFeatLmdb, TxtTokLmdb
from itr_common.errors import cli_entry, fail
from itr_common.fileio import removed_on_failure, result_set, write_json_atomic
from itr_common.logging import TensorBoardLogger, get_logger, progress, setup_logging
from itr_common.metrics import RetrievalResult
from itr_common.models.uniter import img_dim_of, load_uniter_state_dict
from itr_common.rank_state import load_rank_state, save_rank_state
from itr_common.training import signals_deferred
from itr_common.validation import check_same_size, require_writable
from itr_iais.data import HardNegFromImage, HardNegFromText, ItmValDataset, single_collate
from itr_iais.evaluate import evaluate_full, itm_eval, protocol_for, retrieval_result, validate_windows
from itr_iais.losses import tsa_threshold
from itr_iais.model import UniterForImageTextRetrievalHardNeg, batch_to, load_model_config
from itr_iais.optim import build_optimizer, get_lr_sched, set_dropout, set_lr
from itr_iais.options import parse_train_args, resolve_model_config

LOGGER = get_logger(__name__)
TRAIN_STATE_RE = re.compile(r"^train_state_(\d+)\.pt$")


# ----------------------------------------------------------------------------------------------
# small pieces
# ----------------------------------------------------------------------------------------------


class RunningMeter:
    """Exponential moving average of a scalar (smoothing 0.99), NaN values skipped (the original's)."""

    def __init__(self, name: str, smooth: float = 0.99) -> None:
        self.name, self.smooth, self._val = name, smooth, None

    def __call__(self, value: float) -> None:
        val = value if self._val is None else value * (1 - self.smooth) + self._val * self.smooth
        if not np.isnan(val):
            self._val = val

    @property
    def val(self) -> float:
        return 0.0 if self._val is None else self._val


def set_random_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def iais_mode(iais: str | bool, sample_from: str) -> str | None:
    """``V-<mode>`` for the image-sampled group, ``L-<mode>`` for the text-sampled one, None without IAIS."""
    if not iais:
        return None
    return f"{'V' if sample_from == 'i' else 'L'}-{iais}"


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU state dict with the original's key names, ``itm_output`` row 1 set to ``rank_output``.

    The original's ``init_output`` aliases ``rank_output`` to ``itm_output`` row 1 only until
    ``model.to(device)`` copies each parameter, so its checkpoints keep the pre-trained row; writing the
    trained head there lets the original ``inf_itm.py`` (which always calls ``init_output``) score ours correctly.
    """
    state = {k: v.detach().cpu().clone() for k, v in dist.unwrap_model(model).state_dict().items()}
    if "itm_output.weight" in state and "rank_output.weight" in state:
        state["itm_output.weight"][1] = state["rank_output.weight"][0]
        state["itm_output.bias"][1] = state["rank_output.bias"][0]
    return state


def last_train_state(ckpt_dir: Path) -> int | None:
    """The largest N with ``train_state_{N}.pt`` and ``model_step_{N}.pt`` in ``ckpt_dir``."""
    steps = []
    for path in ckpt_dir.glob("train_state_*.pt"):
        match = TRAIN_STATE_RE.match(path.name)
        if match and (ckpt_dir / f"model_step_{match.group(1)}.pt").is_file():
            steps.append(int(match.group(1)))
    return max(steps) if steps else None


def reduce_gradients(parameters: Sequence[nn.Parameter]) -> None:
    """Average the accumulated gradients over processes in one flat buffer (a no-op alone).

    horovod's ``allreduce_`` of the original averages by default (``average=True``), then the
    original divides by 1.
    """
    if dist.get_world_size() == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op="mean")
    offset = 0
    for grad in grads:
        n = grad.numel()
        grad.copy_(flat[offset : offset + n].view_as(grad))
        offset += n


# ----------------------------------------------------------------------------------------------
# setup
# ----------------------------------------------------------------------------------------------


class ImageDbGroup:
    """One ``DetectFeatLmdb`` per image folder, opened on first use (the original ``ImageLmdbGroup``)."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self._dbs: dict[str, DetectFeatLmdb] = {}

    def __getitem__(self, path: str) -> DetectFeatLmdb:
        key = str(Path(path))
        if key not in self._dbs:
            o = self.opts
            self._dbs[key] = DetectFeatLmdb(path, o.conf_th, o.max_bb, o.min_bb, o.num_bb, o.compressed_db)
        return self._dbs[key]


def prepare_output_dir(opts: argparse.Namespace, is_main: bool) -> Path:
    """Create ``log/``, ``ckpt/`` and ``results_*`` and write ``hps.json`` / ``model.json`` (rank 0)."""
    out = Path(opts.output_dir)
    if out.exists() and not out.is_dir():
        fail(f"--output_dir {out}: expected a directory, found a file")
    if out.is_dir() and any(out.iterdir()) and not opts.resume:
        fail(f"--output_dir {out}: already exists and is not empty (pass --resume to continue its last run)")
    dist.barrier()  # every rank has looked at the folder before rank 0 fills it
    if is_main:
        for sub in ("log", "ckpt", "results_val", "results_test", "results_train"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "log" / "hps.json", dict(vars(opts)), indent=4)
        write_json_atomic(out / "log" / "model.json", json.loads(Path(opts.model_config).read_text()), indent=4)
    dist.barrier()
    return out


def build_model(
    opts: argparse.Namespace, device: torch.device, feature_dim: int | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> UniterForImageTextRetrievalHardNeg:
    """The model from ``model_config`` with the pretrained ``checkpoint`` (if any), ranking head initialised.

    ``feature_dim`` (the img_db's region size) sets ``img_dim`` when neither the config nor a checkpoint does.
    ``state``: the checkpoint already loaded (default: loaded from ``opts.checkpoint``). Loading is strict
    but for the documented pre-trained case (``rank_output`` absent, pre-training heads ignored: logged).
    """
    if state is None and opts.checkpoint:
        state = load_checkpoint(opts.checkpoint)
    config = load_model_config(opts.model_config, state, feature_dim)
    model = UniterForImageTextRetrievalHardNeg(config, margin=opts.margin, hard_size=opts.hard_neg_size)
    if state is not None:
        load_uniter_state_dict(model, state, strict=False, source=str(opts.checkpoint))
    model.init_output()  # the pre-trained ITM head differs from the ranking head (always, as the original)
    set_dropout(model, opts.dropout)
    model.to(device)
    for param in model.parameters():  # every process starts from rank 0's weights
        dist.broadcast(param.data, src=0)
    return model


def build_train_loaders(opts: argparse.Namespace, img_dbs: ImageDbGroup, info: dist.DistInfo
                        ) -> tuple[EpochStream, EpochStream]:
    """The text-sampled and image-sampled group streams (one group per batch, reshuffled every pass).

    Everything that decides the next group is a function of ``(seed, pass, position)``: the order
    (a seeded sampler per pass), the negatives (keyed by text id, :class:`~itr_iais.data.EpochSeeded`)
    and the DataLoader's worker seeds (its own generator, never the global RNG), so ``--resume`` can
    continue both streams exactly where they were (``EpochStream.state()``).
    """
    by_text, by_image = [], []
    for txt_path, img_path in zip(opts.train_txt_dbs, opts.train_img_dbs):
        img_db = img_dbs[img_path]
        txt_db = TxtTokLmdb(txt_path, opts.max_txt_len)
        args = (txt_db, img_db, opts.negative_size, bool(opts.IAIS), info.rank, info.world_size)
        by_text.append(HardNegFromText(*args, seed=opts.seed))
        by_image.append(HardNegFromImage(*args, seed=opts.seed))

    def stream(datasets, seed: int) -> EpochStream:
        dataset = ConcatDataset(datasets)
        # each rank already holds its own shard of texts: one replica here
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
        batches = ResumableBatchSampler(sampler, 1)
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=opts.n_workers,
                            pin_memory=opts.pin_mem and info.device.type == "cuda", collate_fn=single_collate,
                            generator=loader_generator(seed))
        return EpochStream(loader, sampler, batches, datasets)

    return stream(by_text, opts.seed), stream(by_image, opts.seed + 1)


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Counters of a run: updates done (``global_step``), iterations, examples seen."""

    global_step: int = 0
    step: int = 0
    n_examples: int = 0
    n_hard_ex: int = 0
    start: float = field(default_factory=time.time)


class Trainer:
    """Owns the model, optimizer, AMP and logging of one run."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.info = dist.init_distributed()
        self.device = self.info.device
        self.is_main = self.info.is_main
        set_random_seed(opts.seed)
        # every input is opened and checked against the others before the output folder is touched
        self.img_dbs = ImageDbGroup(opts)
        self.stream_t, self.stream_i = build_train_loaders(opts, self.img_dbs, self.info)
        self.val_txt_db = TxtTokLmdb(opts.val_txt_db, -1)
        self.val_img_db = self.img_dbs[opts.val_img_db]
        self.val_windows = ItmValDataset(self.val_txt_db, self.val_img_db, opts.inf_minibatch_size,
                                         self.info.rank, self.info.world_size)
        self.test_txt_db = TxtTokLmdb(opts.test_txt_db, -1)
        self.test_img_db = self.img_dbs[opts.test_img_db]
        pretrained = load_checkpoint(opts.checkpoint) if opts.checkpoint else None
        feature_dim = self.check_feature_sizes(pretrained)
        self.out = prepare_output_dir(opts, self.is_main)
        setup_logging(self.info.rank, self.out / "log" / "log.txt")
        LOGGER.info("device: %s n_gpu: %d, rank: %d, 16-bits training: %s", self.device, self.info.world_size,
                    self.info.rank, opts.fp16)
        self.tb = TensorBoardLogger(self.out / "log", enabled=self.is_main)
        self.ckpt_dir = self.out / "ckpt"
        self.model = build_model(opts, self.device, feature_dim, pretrained)
        self.optimizer = build_optimizer(self.model, opts.optim, opts.learning_rate, opts.betas, opts.weight_decay)
        self.amp = Amp(AmpConfig.from_original(fp16=opts.fp16, device=self.device))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.state = TrainState()
        self.running_loss = RunningMeter("loss")
        self.ranking_loss = RunningMeter("rank_loss")
        self.iais_logs: dict[str, float] = {}
        self.boundary: dict[str, Any] = {}
        self.on_saved: Callable[[], None] = lambda: None
        self.saved_step: int | None = None  # the update of the newest train_state_{N}.pt (written or resumed)
        if opts.resume:
            self.resume()
        self.mark_boundary()

    def check_feature_sizes(self, pretrained: dict[str, torch.Tensor] | None) -> int:
        """The region feature size of every img_db, the checkpoint and the model config agree; returns it."""
        sizes: dict[str, int | None] = {}
        for key, paths in (("train_img_dbs", self.opts.train_img_dbs), ("val_img_db", [self.opts.val_img_db]),
                           ("test_img_db", [self.opts.test_img_db])):
            for path in paths:
                sizes[f"{key} {path}"] = self.img_dbs[path].feature_dim
        if pretrained is not None:
            sizes[f"checkpoint {self.opts.checkpoint} (img_dim)"] = img_dim_of(strip_module_prefix(pretrained))
        config = json.loads(Path(self.opts.model_config).read_text())
        if isinstance(config, dict) and "img_dim" in config:
            sizes[f"model_config {self.opts.model_config} (img_dim)"] = config["img_dim"]
        found = check_same_size(sizes)
        if found is None:
            fail(f"train_img_dbs {self.opts.train_img_dbs[0]}: expected images with region features, found none")
        return found

    # -- checkpoints --------------------------------------------------------------------------

    def mark_boundary(self) -> None:
        """Remember what decides the next update (RNG, both streams' positions, meters): the state any save
        until the next update writes, so that a save between two updates (SIGTERM while gradients are
        being accumulated) resumes exactly at this update boundary."""
        self.boundary = {
            "rng": capture_rng_state(),
            "data": {"text_groups": self.stream_t.state(), "image_groups": self.stream_i.state()},
            "meters": {"loss": self.running_loss._val, "rank_loss": self.ranking_loss._val},
        }

    def save(self, tag: int | str, with_train_state: bool = True) -> None:
        """``model_step_{tag}.pt`` + ``train_state_{tag}.pt`` (rank 0), ``train_state_{tag}.rank{R}.pt`` (other
        ranks: their RNG and data positions), atomically. The weights and the optimizer change only at an
        update, so together with :attr:`boundary` they describe the last update boundary exactly."""
        if self.is_main:
            save_atomic(model_state_dict(self.model), self.ckpt_dir / f"model_step_{tag}.pt")
        if with_train_state:
            save_rank_state(self.ckpt_dir / f"train_state_{tag}.pt", self.info,
                            {"step": int(self.state.global_step), **self.boundary},
                            lambda: {"optimizer": self.optimizer.state_dict(), "amp": self.amp.state_dict()})
            self.saved_step = int(self.state.global_step)
        if self.is_main:
            self.on_saved()

    def resume(self) -> None:
        step = last_train_state(self.ckpt_dir)
        if step is None:
            LOGGER.info("--resume: no train_state_{N}.pt in %s, starting from scratch", self.ckpt_dir)
            return
        weights_path = self.ckpt_dir / f"model_step_{step}.pt"
        load_uniter_state_dict(self.model, load_checkpoint(weights_path), strict=True, source=str(weights_path))
        state_path = self.ckpt_dir / f"train_state_{step}.pt"
        state = load_checkpoint(state_path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.amp.load_state_dict(state.get("amp", {}))
        # this rank's RNG and data positions: rank R > 0 reads train_state_{N}.rank{R}.pt (refused in one line when
        # missing, of another update, or saved by another number of processes)
        own = load_rank_state(state, state_path, self.info, same=("step",), per_rank=("rng", "data"))
        if "rng" in own:
            restore_rng_state(own["rng"])
        if "data" in own:
            self.stream_t.load_state(own["data"]["text_groups"])
            self.stream_i.load_state(own["data"]["image_groups"])
        else:  # a train state of an older version: the data order starts a new pass
            LOGGER.warning("%s has no data positions: the data order restarts (the resumed run is not exact)",
                           state_path)
        meters = own.get("meters", {})
        self.running_loss._val, self.ranking_loss._val = meters.get("loss"), meters.get("rank_loss")
        self.state.global_step = int(state["step"])
        self.state.step = self.state.global_step * self.opts.train_batch_size
        self.saved_step = self.state.global_step
        LOGGER.info("resumed from %s at update %d", self.ckpt_dir, self.state.global_step)

    # -- one iteration ------------------------------------------------------------------------

    def group_loss(self, batch: dict, sample_from: str) -> torch.Tensor:
        """Forward + backward of one group; returns the (unscaled) loss."""
        opts = self.opts
        batch = batch_to(batch, self.device)
        with self.amp.autocast():
            out = self.model(batch, sample_from=sample_from, iais=iais_mode(opts.IAIS, sample_from))
        rank_loss = out.rank_loss.float().mean() / opts.train_batch_size
        loss = rank_loss
        if out.iais is not None:
            weight = tsa_threshold("exp_schedule", self.state.global_step, opts.num_train_steps)
            tsa_loss = out.iais.float() * weight
            self.iais_logs = {**{k: float(v.detach()) for k, v in out.logs.items()},
                              "self_attn_loss_tsa": float(tsa_loss.detach())}
            self.ranking_loss(rank_loss.item())
            loss = rank_loss + tsa_loss
        self.amp.backward(loss)
        self.state.n_examples += batch["attn_masks"].size(0)
        self.state.n_hard_ex += out.rank_loss.size(0) * (out.rank_loss.size(1) + 1)
        return loss

    def update(self) -> None:
        """Average gradients, schedule the lr, clip, step, log."""
        opts, st = self.opts, self.state
        reduce_gradients(self.params)
        st.global_step += 1
        lr = get_lr_sched(st.global_step, opts.learning_rate, opts.warmup_steps, opts.num_train_steps)
        set_lr(self.optimizer, lr)
        self.tb.log_value("lr", lr, st.global_step)
        self.tb.log_value("loss", self.running_loss.val, st.global_step)
        if opts.IAIS:
            self.tb.log_dict(self.iais_logs, st.global_step)
            self.tb.log_value("rank_loss", self.ranking_loss.val, st.global_step)
        grad_norm = self.amp.step(self.optimizer, self.params, opts.grad_norm if opts.grad_norm != -1 else None)
        if opts.grad_norm != -1:
            self.tb.log_value("grad_norm", float(grad_norm), st.global_step)
        self.optimizer.zero_grad(set_to_none=True)
        if st.global_step % 100 == 0:
            self.log_throughput()

    def log_throughput(self) -> None:
        st = self.state
        elapsed = max(time.time() - st.start, 1e-9)
        tot_ex = sum(dist.all_gather_object(st.n_examples))
        tot_hn = sum(dist.all_gather_object(st.n_hard_ex))
        LOGGER.info("%d (%d) examples (hard) trained at %d (%d) ex/s", tot_ex, tot_hn, tot_ex / elapsed,
                    tot_hn / elapsed)
        self.tb.log_value("perf/ex_per_s", tot_ex / elapsed, st.global_step)
        self.tb.log_value("perf/hn_per_s", tot_hn / elapsed, st.global_step)

    # -- evaluation ---------------------------------------------------------------------------

    def score_fn(self, batch: dict) -> torch.Tensor:
        return self.model.score(batch)

    def validate(self) -> dict[str, float]:
        with rng_preserved():
            return self._validate()

    def _validate(self) -> dict[str, float]:
        self.model.eval()
        log = validate_windows(self.score_fn, self.val_windows, self.device, self.amp.autocast)
        self.model.train()
        LOGGER.info("validation: recall_1 %.2f, recall_5 %.2f, recall_10 %.2f", 100 * log["valid/recall_1"],
                    100 * log["valid/recall_5"], 100 * log["valid/recall_10"])
        return log

    def evaluate(self, txt_db: TxtTokLmdb, img_db: DetectFeatLmdb, split: str) -> tuple[dict, RetrievalResult]:
        with rng_preserved():  # evaluation never shifts the training's random draws
            return self._evaluate(txt_db, img_db, split)

    def _evaluate(self, txt_db: TxtTokLmdb, img_db: DetectFeatLmdb, split: str) -> tuple[dict, RetrievalResult]:
        self.model.eval()
        bar = progress(total=len(txt_db.img2txts), desc=f"eval {split}", disable=not self.is_main)
        scores, txt_ids, img_ids, seconds = evaluate_full(
            self.score_fn, txt_db, img_db, self.opts.inf_minibatch_size, self.device, self.amp.autocast,
            progress=bar.update)
        bar.close()
        self.model.train()
        log = itm_eval(scores, txt_ids, img_ids, txt_db.txt2img, txt_db.img2txts)
        result = retrieval_result(scores, txt_ids, img_ids, txt_db.txt2img, txt_db.img2txts,
                                  protocol_for(str(txt_db.db_dir)),
                                  extras={"name": f"iais-{split}", "split": split, "time_s": seconds,
                                          "pairs_per_s": scores.numel() / max(seconds, 1e-9),
                                          "global_step": self.state.global_step})
        return log, result

    def report(self, split: str, log: dict, result: RetrievalResult) -> None:
        if not self.is_main:
            return
        LOGGER.info(
            "%s: image retrieval R1: %.2f, R5: %.2f, R10: %.2f; text retrieval R1: %.2f, R5: %.2f, R10: %.2f",
            split, *(100 * log[k] for k in ("img_r1", "img_r5", "img_r10", "txt_r1", "txt_r5", "txt_r10")))
        print(result.table(), flush=True)

    # -- the run ------------------------------------------------------------------------------

    def train(self) -> RetrievalResult:
        opts, st = self.opts, self.state
        LOGGER.info("***** Running training on %d processes *****", self.info.world_size)
        LOGGER.info("  Num examples = %d", sum(dist.all_gather_object(len(self.stream_t.loader.dataset))))
        LOGGER.info("  Batch size = %d, Num steps = %d", opts.train_batch_size, opts.num_train_steps)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        bar = progress(total=opts.num_train_steps, initial=st.global_step, desc="train", disable=not self.is_main)
        image_groups = iter(self.stream_i)
        def save_on_signal() -> str:
            """SaveOnSignal's callback at an update boundary (one process: from the handler; torchrun: from
            ``guard.at_boundary()``, on every rank at the same update); SaveOnSignal prints what it saved."""
            self.save(st.global_step)
            return f"{self.ckpt_dir / f'train_state_{st.global_step}.pt'} at update {st.global_step}"

        with SaveOnSignal(save_on_signal, info=self.info) as guard:
            if st.global_step < opts.num_train_steps:
                for batch_t in self.stream_t:
                    self.group_loss(next(image_groups), "i")
                    loss = self.group_loss(batch_t, "t")
                    self.running_loss(loss.item())
                    st.step += 1
                    if st.step % opts.train_batch_size == 0:
                        with signals_deferred():  # the update and its boundary belong together
                            self.update()
                            self.mark_boundary()
                        bar.update(1)
                        if st.global_step % opts.valid_steps == 0:
                            self.periodic_validation()
                        guard.at_boundary()  # torchrun: the ranks agree on a signal here and all save this update
                    if st.global_step >= opts.num_train_steps:
                        break
            bar.close()
            if self.saved_step != st.global_step:
                # the last update is saved before the final evaluations: a kill from here on (torchrun's SIGKILL
                # after its grace period included) loses no update, and --resume runs only the evaluations again
                self.save(st.global_step)
            log = self.validate()
            self.tb.log_dict(log, st.global_step)
            guard.at_boundary()  # torchrun: a signal during the final validation stops every rank here
            self.save(f"{st.global_step}_final", with_train_state=False)
            test_log, result = self.evaluate(self.test_txt_db, self.test_img_db, "test")
            self.tb.log_dict({f"eval/test_{k}": v for k, v in test_log.items()}, st.global_step)
            if self.is_main:
                with result_set(self.out / "results_test") as files:
                    write_json_atomic(files.path("scores.json"), test_log)
                    result.write_json(files.path("retrieval_result.json"))
        self.report("test", test_log, result)
        self.tb.close()
        return result

    def periodic_validation(self) -> None:
        """Validation and checkpoint every ``valid_steps`` updates, with SIGINT/SIGTERM deferred: every rank takes
        part in the validation's gathers; a signal received meanwhile is acted on after it (one process: by the
        handler; torchrun: at the ``at_boundary()`` every rank reaches next), saving this update."""
        st = self.state
        with signals_deferred():
            dist.barrier()  # every rank is in this block before rank 0 says so
            LOGGER.info("validation at update %d", st.global_step)
            if self.opts.full_val:
                log, result = self.evaluate(self.val_txt_db, self.val_img_db, "val")
                self.tb.log_dict({f"valid/{k}": v for k, v in log.items()}, st.global_step)
                self.report(f"val (step {st.global_step})", log, result)
            else:
                self.tb.log_dict(self.validate(), st.global_step)
            self.save(st.global_step)


def check_inputs(opts: argparse.Namespace) -> None:
    """Fail early, with one line, on a missing model config, checkpoint or database."""
    opts.model_config = str(resolve_model_config(opts.model_config))
    if opts.checkpoint and not Path(opts.checkpoint).is_file():
        fail(f"checkpoint {opts.checkpoint}: pretrained UNITER checkpoint not found")
    for key in ("train_txt_dbs", "train_img_dbs"):
        for path in getattr(opts, key):
            if not Path(path).is_dir():
                fail(f"{key}: {path}: directory not found")
    for key in ("val_txt_db", "val_img_db", "test_txt_db", "test_img_db"):
        if not Path(getattr(opts, key)).is_dir():
            fail(f"{key}: {getattr(opts, key)}: directory not found")
    require_writable(opts.output_dir, "--output_dir")


def run(opts: argparse.Namespace) -> RetrievalResult:
    """Train with parsed options and return the test evaluation.

    A run that fails (bad input found late, a crash, SIGTERM) before its first checkpoint removes what it
    created in ``output_dir``, so that the next plain run is not refused as "not empty".
    """
    check_inputs(opts)
    with removed_on_failure(opts.output_dir, enabled=int(os.environ.get("RANK", "0")) == 0) as keep:
        trainer = Trainer(opts)
        trainer.on_saved = keep
        return trainer.train()


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    run(parse_train_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
