"""``python train_itm.py --config config/flickr30k_ft_config.json [...]``: fine-tune the bi-encoder.

The original loop (``train_itm.py``): each epoch shuffles the captions, a batch of ``bs`` (caption,
image) pairs (+ K hard negatives per side) goes through both towers, the loss is
``0.5 * NLL(images -> texts) + 0.5 * NLL(texts -> images)`` over in-batch negatives, AdamW (eps 1e-8,
no decay) with 10% linear warmup then linear decay, clipping at ``max_grad_norm``. After every epoch
the validation split is indexed with faiss and recall measured; ``biencoder.best.pt`` /
``biencoder.last.pt`` are saved (CheckpointState) and, with ``num_hard_negatives > 0``, new hard
negatives are mined from the model's own retrieval on the training split. Then the test split.

Multi-process (``torchrun --nproc_per_node N train_itm.py ...``): each rank takes its share of every
epoch's permutation; embeddings are gathered across ranks for the in-batch negatives (with gradients
to the local ones) and gradients summed, so N ranks with batch b train as one process with batch N*b.
Ours: ``{output_dir}/train_state.pt`` every ``valid_steps`` updates, after each epoch and on SIGINT/SIGTERM
(at the last update boundary), and ``--resume`` continuing from it exactly (RNG, data position, optimizer,
scheduler, hard negatives). With N processes every rank R > 0 also writes its own RNG streams to
``train_state.rankR.pt`` and restores them on resume (their dropout masks differ from rank 0's); a signal to any
rank stops every rank at the same update boundary, where they agree on it (``SaveOnSignal.at_boundary``).
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from itr_common import dist
from itr_common.amp import Amp, AmpConfig
from itr_common.checkpoint import (
    SaveOnSignal,
    capture_rng_state,
    load_checkpoint,
    load_state_dict_mapped,
    restore_rng_state,
)
from itr_common.data.uniter_lmdb import TxtTokLmdb
from itr_common.errors import cli_entry, fail
from itr_common.fileio import write_json_atomic
from itr_common.logging import setup_logging
from itr_common.metrics import RetrievalResult
from itr_common.rank_state import load_rank_state, save_rank_state
from itr_common.training import signals_deferred
from itr_lightningdot.build import build_model, check_img_dbs, pick_device, writable_dir
from itr_lightningdot.checkpoints import save_checkpoint
from itr_lightningdot.data import (
    EpochOrder,
    ImageDbGroup,
    ItmFastDataset,
    get_img_txt_mappings,
    iterate_batches,
    load_img_meta,
    move_batch,
    sample_hard_negatives,
)
from itr_lightningdot.evaluate import encode_split, evaluate_split, in_batch_stats
from itr_lightningdot.losses import biencoder_loss
from itr_lightningdot.model import BiEncoder
from itr_lightningdot.optim import get_optimizer, get_schedule_linear, warmup_for
from itr_lightningdot.options import parse_train_args

LOGGER = logging.getLogger("itr_lightningdot.train_itm")
STATE_FILE = "train_state.pt"


@dataclass
class TrainOutcome:
    output_dir: Path
    val_results: list[RetrievalResult] = field(default_factory=list)
    test_result: RetrievalResult | None = None
    best_metric: float = 0.0
    updates: int = 0


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def caption_tokenizer(args: argparse.Namespace) -> Any:
    """bert-base-cased's tokenizer for the generated captions: the vocab.txt of ``txt_model_config`` (a BERT
    directory) or of the folder holding ``txt_checkpoint``."""
    from itr_common.text import load_bert_tokenizer

    for candidate in (Path(args.txt_model_config), Path(args.txt_checkpoint or "").parent):
        if candidate.is_dir() and (candidate / "vocab.txt").is_file():
            return load_bert_tokenizer(candidate, do_lower_case=False)
    fail("caption_score_weight: expected a vocab.txt beside txt_model_config or txt_checkpoint to tokenise the "
         "generated captions, found none")


def _datasets(args: argparse.Namespace, img_group: ImageDbGroup, tokenizer: Any) -> list[ItmFastDataset]:
    meta = load_img_meta(args.itm_global_file) if args.caption_score_weight else None
    return [ItmFastDataset(TxtTokLmdb(t, args.max_txt_len), img_group[i], args.num_hard_negatives, meta, tokenizer)
            for t, i in zip(args.train_txt_dbs, args.train_img_dbs)]


def _recall_metric(result: RetrievalResult) -> float:
    """The original's model-selection value: mean over K of (image R@K + text R@K) / 2, as a fraction."""
    return float(np.mean([(result.i2t[i] + result.t2i[i]) / 200 for i in range(3)]))


def mine_hard_negatives(model: BiEncoder, datasets: list[ItmFastDataset], args: argparse.Namespace,
                        device: torch.device, amp: Amp, epoch: int) -> tuple[dict, dict]:
    """``sampled_hard_negatives``: each training db indexed with the current model, the top
    ``min(max(2K + 10, 50), 1000)`` of every caption / image as the pool, K picked per ``hard_negatives_sampling``."""
    from itr_lightningdot.indexer import make_indexer

    mappings = get_img_txt_mappings(args.train_txt_dbs)
    k = args.num_hard_negatives
    pool = min(max(k * 2 + 10, 50), 1000)
    rng = random.Random(args.seed * 7919 + epoch)
    hard_img: dict[str, list[str]] = {}
    hard_txt: dict[str, list[str]] = {}
    for ds in datasets:
        split = encode_split(model, ds.txt_db, ds.img_db, args.valid_batch_size, device, amp)
        img_index = make_indexer(split.img.shape[1], args.hnsw_index)
        img_index.index_vectors(split.img, split.img_fnames)
        txt_index = make_indexer(split.txt.shape[1], args.hnsw_index)
        txt_index.index_vectors(split.txt, split.txt_ids)
        _, top_img = img_index.search(split.txt, min(pool, len(split.img)))
        _, top_txt = txt_index.search(split.img, min(pool, len(split.txt)))
        ranked_img = {t: [split.img_fnames[j] for j in row if j >= 0] for t, row in zip(split.txt_ids, top_img)}
        ranked_txt = {f: [split.txt_ids[j] for j in row if j >= 0] for f, row in zip(split.img_fnames, top_txt)}
        mode = "random" if args.hard_negatives_sampling == "none" else args.hard_negatives_sampling
        a, b = sample_hard_negatives(ranked_img, ranked_txt, mappings, k, mode, rng)
        hard_img.update(a)
        hard_txt.update(b)
    return hard_img, hard_txt


def evaluate(model: BiEncoder, txt_db: str, img_db: str, args: argparse.Namespace, img_group: ImageDbGroup,
             device: torch.device, amp: Amp | None) -> RetrievalResult:
    """Recall of one split with the faiss index (as the original's eval_model_on_dataloader)."""
    start = time.perf_counter()
    split = encode_split(model, TxtTokLmdb(txt_db, -1), img_group[img_db], args.valid_batch_size, device, amp)
    encode_s = time.perf_counter() - start
    loss, correct = in_batch_stats(model, split, args.valid_batch_size)
    result, recall_img, recall_txt = evaluate_split(split, args.hnsw_index, extras={
        "encode_s": encode_s, "loss": loss, "correct_ratio": correct, "txt_db": str(txt_db)})
    LOGGER.info("image retrieval recall = %s", {k: round(v, 4) for k, v in recall_img.items()})
    LOGGER.info("txt retrieval recall = %s", {k: round(v, 4) for k, v in recall_txt.items()})
    return result


def _sum_gradients(model: torch.nn.Module) -> None:
    """All-reduce (sum) every gradient: each rank's loss is the global one, so the sum is its gradient."""
    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad, op="sum")


def run(args: argparse.Namespace) -> TrainOutcome:
    info = dist.init_distributed(device="cpu" if args.no_cuda else None)
    device = pick_device(args.no_cuda, info.device)
    out = Path(args.output_dir)
    state_path = out / STATE_FILE
    if info.is_main:
        used = out.is_dir() and any(p.name != "log.txt" for p in out.iterdir())
        if used and not args.resume:
            fail(f"output_dir {out}: expected an empty or new directory, found files (use --resume to continue)")
        if args.resume and not state_path.is_file():
            fail(f"--resume: expected {state_path} from an earlier run, found none")
        writable_dir(out, "output_dir")
    dist.barrier()
    setup_logging(info.rank, out / "log.txt")
    _seed(args.seed)

    tokenizer = caption_tokenizer(args) if args.caption_score_weight else None
    model, img_dim = build_model(args)
    img_group = ImageDbGroup(args.conf_th, args.max_bb, args.min_bb, args.num_bb, args.compressed_db)
    datasets = _datasets(args, img_group, tokenizer)
    eval_dbs = [img_group[args.val_img_db]] + ([img_group[args.test_img_db]] if args.test_img_db else [])
    check_img_dbs([ds.img_db for ds in datasets] + eval_dbs, img_dim, "the image tower")
    TxtTokLmdb(args.val_txt_db, -1)
    if args.test_txt_db:
        TxtTokLmdb(args.test_txt_db, -1)
    if info.is_main:
        write_json_atomic(out / "hps.json", {k: v for k, v in vars(args).items() if k != "img_meta"})

    model.to(device)
    optimizer = get_optimizer(model, args.learning_rate)
    amp = Amp(AmpConfig.from_original(args.fp16, args.fp16_opt_level, device))
    train_set = torch.utils.data.ConcatDataset(datasets)
    order = EpochOrder(len(train_set), args.train_batch_size, args.seed, info.rank, info.world_size)
    updates_per_epoch = len(order) // args.gradient_accumulation_steps
    total_updates = updates_per_epoch * args.num_train_epochs
    if total_updates == 0:
        fail(f"train_batch_size/gradient_accumulation_steps: expected at least one update per epoch, found "
             f"{len(order)} batches and {args.gradient_accumulation_steps} batches per update")
    scheduler = get_schedule_linear(optimizer, warmup_for(total_updates), total_updates)

    progress = {"epoch": 0, "batch": 0, "updates": 0, "best": 0.0, "hard_img": None, "hard_txt": None}
    if args.resume:
        state = load_checkpoint(state_path)
        load_state_dict_mapped(model, state["model"], source=str(state_path))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        amp.load_state_dict(state["amp"])
        progress.update(state["progress"])
        restore_rng_state(load_rank_state(state, state_path, info, same=("position",))["rng"])
        LOGGER.info("resumed from %s: epoch %d, batch %d, update %d", state_path, progress["epoch"],
                    progress["batch"], progress["updates"])
    elif args.sample_init_hard_negatives:
        progress["hard_img"], progress["hard_txt"] = mine_hard_negatives(model, datasets, args, device, amp, -1)

    boundary: dict[str, Any] = {}

    def mark_boundary() -> None:
        """Remember the state at an update boundary: what a save until the next update writes (the weights,
        optimizer and scheduler change only at an update; a signal between accumulated batches saves this)."""
        boundary.update(progress=dict(progress), rng=capture_rng_state())

    def save_state() -> None:
        """Rank 0: ``train_state.pt`` (single-process layout); rank R > 0: its RNG in ``train_state.rankR.pt``."""
        at = boundary["progress"]
        own = {"rng": boundary["rng"], "position": [at["epoch"], at["batch"], at["updates"]]}
        save_rank_state(state_path, info, own,
                        lambda: {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(), "amp": amp.state_dict(), "progress": dict(at)})

    def save_on_signal() -> str:
        """SaveOnSignal's callback at an update boundary (one process: from the handler, batches run with the
        signals deferred; torchrun: from ``guard.at_boundary()``, on every rank at the same update)."""
        save_state()
        at = boundary["progress"]
        return f"{state_path} at epoch {at['epoch']}, batch {at['batch']} (update {at['updates']})"

    outcome = TrainOutcome(out, best_metric=progress["best"])
    distributed = info.world_size > 1
    LOGGER.info("Running training: %d captions, %d batches/epoch/rank, %d updates, %d ranks on %s, %s",
                len(train_set), len(order), total_updates, info.world_size, device,
                f"mixed precision {str(amp.config.dtype).replace('torch.', '')}"
                + (" + loss scaling" if amp.config.use_scaler else "") if amp.enabled else "float32")
    mark_boundary()
    with SaveOnSignal(save_on_signal, info=info) as guard:
        for epoch in range(progress["epoch"], args.num_train_epochs):
            model.train()
            for ds in datasets:
                ds.new_epoch(progress["hard_img"], progress["hard_txt"])
            batches = order.batches(epoch)
            first = progress["batch"]
            epoch_loss = 0.0
            for step, batch in enumerate(iterate_batches(train_set, batches[first:], args.n_workers, args.pin_mem),
                                         start=first):
                with signals_deferred():  # a SIGINT/SIGTERM waits for this batch (and its update)
                    batch = move_batch(batch, device)
                    with amp.autocast():
                        out_vec = model(batch)
                    res = biencoder_loss(out_vec.txt.float(), out_vec.img.float(),
                                         out_vec.caps.float() if out_vec.caps is not None else None,
                                         batch["sample_size"], args.caption_score_weight, gather=distributed)
                    loss = res.loss / args.gradient_accumulation_steps
                    amp.backward(loss)
                    epoch_loss += float(res.loss.detach())
                    progress["batch"] = step + 1
                    if (step + 1) % args.log_result_step == 0 and info.is_main:
                        LOGGER.info("Epoch: %d: Step: %d/%d, loss=%f, loss_nce=%f, loss_kd=0.0, lr=%f", epoch, step,
                                    len(batches), float(loss.detach()), float(res.loss.detach()),
                                    optimizer.param_groups[0]["lr"])
                    if (step + 1) % args.gradient_accumulation_steps == 0:
                        if distributed:
                            _sum_gradients(model)
                        amp.step(optimizer, max_grad_norm=args.max_grad_norm if args.max_grad_norm > 0 else None)
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                        progress["updates"] += 1
                        mark_boundary()
                        if progress["updates"] % args.valid_steps == 0:
                            save_state()
                if (step + 1) % args.gradient_accumulation_steps == 0:
                    guard.at_boundary()  # torchrun: the ranks agree on a signal here and all save this update
            with signals_deferred():  # validation, checkpoints and mining end the epoch before a signal saves
                dist.barrier()  # every rank is in this block before the loss line
                optimizer.zero_grad(set_to_none=True)
                LOGGER.info("Av Loss per epoch = %f", epoch_loss / max(len(batches), 1))
                result = evaluate(model, args.val_txt_db, args.val_img_db, args, img_group, device, amp)
                metric = _recall_metric(result)
                outcome.val_results.append(result)
                LOGGER.info("epoch %d validation: rsum %.2f, R@mean %.4f", epoch, result.rsum, metric)
                if info.is_main:
                    if metric > progress["best"]:
                        progress["best"] = metric
                        save_checkpoint(out, model, optimizer, scheduler, epoch, 0, "best")
                    save_checkpoint(out, model, optimizer, scheduler, epoch, 0, "last")
                    if args.save_all_epochs:
                        save_checkpoint(out, model, optimizer, scheduler, epoch, 0)
                if args.num_hard_negatives > 0:
                    progress["hard_img"], progress["hard_txt"] = mine_hard_negatives(model, datasets, args, device,
                                                                                      amp, epoch)
                progress.update(epoch=epoch + 1, batch=0)
                mark_boundary()
                save_state()
            guard.at_boundary()  # a signal during the epoch's end stops every rank at epoch + 1
    outcome.best_metric = progress["best"]
    outcome.updates = progress["updates"]
    if args.test_txt_db:
        outcome.test_result = evaluate(model, args.test_txt_db, args.test_img_db, args, img_group, device, amp)
        if info.is_main:
            outcome.test_result.extras.update(name="lightningdot", checkpoint="biencoder.last.pt")
            outcome.test_result.write_json(out / "retrieval_result_test.json")
            print(outcome.test_result.table())
    dist.barrier()
    return outcome


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_train_args(argv)
    with dist.shutdown_after():
        run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

