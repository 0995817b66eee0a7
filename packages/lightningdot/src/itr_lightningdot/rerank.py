"""``python rerank.py``: the bi-encoder's top M re-scored by a UNITER ITM cross-encoder (``rerank.py``).

For every caption of the test split the bi-encoder retrieves the top M images (M in ``--thresholds``,
10/20/50/100 as the original) from the faiss index, and the UNITER ITM model re-orders them; likewise
for every image its top M captions. Recall before (bi-encoder alone) and after re-ranking is printed in
one table and written to ``{output_dir}/rerank.json``.

The UNITER scores come either from a checkpoint scored here (``--uniter_checkpoint`` +
``--uniter_config``: an IAIS ``model_step_N.pt`` or an original UNITER ITM checkpoint, through the
UNITER of ``itr_common``) or, as the original, from an ``inf_itm.py`` output (``--uniter_results``:
``results.bin`` / ``results.npz``, every pair pre-scored). Only the M candidates per query are
scored here, which is the point of the pipeline: M x queries cross-encoder passes instead of all pairs.

Fixes: the original divided the first-stage text-retrieval recall by the number of captions, counted
each image once per caption, and hard-coded its paths and dataset in the script.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from itr_common.amp import Amp, AmpConfig
from itr_common.data.uniter_lmdb import TxtTokLmdb
from itr_common.errors import cli_entry, fail, require_file
from itr_common.fileio import write_json_atomic
from itr_common.logging import progress, setup_logging
from itr_common.metrics import RetrievalResult, metrics_from_ranks
from itr_lightningdot.build import build_model, check_img_dbs, pick_device, writable_dir
from itr_lightningdot.data import ImageDbGroup
from itr_lightningdot.evaluate import EncodedSplit, encode_split, exact_ranks, protocol_name
from itr_lightningdot.indexer import make_indexer
from itr_lightningdot.options import (
    add_itm_params,
    add_logging_params,
    check_common,
    default_params,
    map_db_dirs,
    parse_with_config,
)

LOGGER = logging.getLogger("itr_lightningdot.rerank")
THRESHOLDS = (10, 20, 50, 100)
TOPS = (1, 5, 10)


def parser():
    from itr_common.errors import ArgumentParser

    p = ArgumentParser(prog="rerank.py", description="Re-rank the bi-encoder's top M with a UNITER ITM model.")
    default_params(p)
    add_itm_params(p)
    add_logging_params(p)
    p.add_argument("--uniter_checkpoint", default=None, help="UNITER ITM weights (IAIS model_step_N.pt, ...)")
    p.add_argument("--uniter_config", default=None, help="its model config (uniter-base.json, ...)")
    p.add_argument("--uniter_results", default=None, help="inf_itm.py output (results.bin / results.npz / dir)")
    p.add_argument("--thresholds", type=int, nargs="+", default=list(THRESHOLDS), help="the M values")
    p.add_argument("--uniter_batch_size", type=int, default=100, help="pairs per UNITER forward pass")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = parse_with_config(parser(), argv)
    map_db_dirs(args)
    check_common(args)
    if not args.biencoder_checkpoint:
        fail("--biencoder_checkpoint: expected the bi-encoder to re-rank (biencoder.*.pt), found none")
    if not args.test_txt_db or not args.test_img_db:
        fail("test_txt_db/test_img_db: expected the split to re-rank, found none")
    if bool(args.uniter_checkpoint) == bool(args.uniter_results):
        fail("--uniter_checkpoint/--uniter_results: expected exactly one source of UNITER scores")
    if args.uniter_checkpoint:
        require_file(args.uniter_checkpoint, "--uniter_checkpoint")
        if not args.uniter_config:
            fail("--uniter_config: expected the UNITER model config of --uniter_checkpoint, found none")
        require_file(args.uniter_config, "--uniter_config")
    if any(m <= 0 for m in args.thresholds) or args.uniter_batch_size <= 0:
        fail(f"--thresholds/--uniter_batch_size: expected positive integers, found {args.thresholds}, "
             f"{args.uniter_batch_size}")
    return args


class UniterScorer:
    """Scores (caption, image) pairs with a UNITER ITM ranking head (``itr_common.models.uniter``).

    The checkpoint is an IAIS / UNITER fine-tuned ``model_step_N.pt`` (``uniter.*``, ``itm_output``,
    ``rank_output``) or a pre-trained one without ``rank_output`` (then ``init_output``, as ``inf_itm.py``).
    Pairs are laid out ``[caption | regions padded]`` (the IAIS layout, the same scores as the compact one).
    """

    def __init__(self, checkpoint: str, config: str, txt_db: TxtTokLmdb, img_db, device: torch.device,
                 batch_size: int) -> None:
        from itr_common.checkpoint import load_checkpoint
        from itr_common.models.uniter import (
            UniterConfig,
            UniterForImageTextRetrieval,
            img_dim_of,
            load_uniter_state_dict,
        )

        state = load_checkpoint(checkpoint)
        if not isinstance(state, dict):
            fail(f"{checkpoint}: expected a UNITER state dict, found {type(state).__name__}")
        img_dim = img_dim_of(state)
        model_config = UniterConfig.from_json_file(config, strict=False, **({"img_dim": img_dim} if img_dim else {}))
        self.model = UniterForImageTextRetrieval(model_config)
        report = load_uniter_state_dict(self.model, state, strict=False, source=str(checkpoint))
        missing = [k for k in report.missing if not k.startswith("rank_output.")]
        if missing:
            fail(f"{checkpoint}: expected a UNITER ITM checkpoint, missing {missing[:5]} ({len(missing)} in all)")
        if report.missing:
            LOGGER.info("%s has no rank_output: zero-shot, ranking head from itm_output", checkpoint)
            self.model.init_output()
        self.model.to(device).eval()
        self.txt_db, self.img_db, self.device, self.batch_size = txt_db, img_db, device, batch_size
        self.cache: dict[tuple[str, str], float] = {}
        self.pairs_scored = 0

    def reset(self) -> None:
        """Forget the scored pairs, so each M is timed scoring all of its own pairs (none left from a smaller M)."""
        self.cache.clear()

    def _batch(self, ids: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        from itr_common.data.batching import pad_tensors

        feats, poss = zip(*(self.img_db[n] for n in names))
        nbbs = [f.size(0) for f in feats]
        n, tl = len(names), ids.size(0)
        attn = torch.zeros(n, tl + max(nbbs), dtype=torch.long)
        for i, nbb in enumerate(nbbs):
            attn[i, : tl + nbb] = 1
        return {"input_ids": ids.unsqueeze(0).expand(n, -1), "position_ids": torch.arange(tl).unsqueeze(0),
                "img_feat": pad_tensors(feats, nbbs), "img_pos_feat": pad_tensors(poss, nbbs), "attn": attn}

    @torch.no_grad()
    def __call__(self, txt_id: str, img_names: Sequence[str]) -> np.ndarray:
        todo = [n for n in dict.fromkeys(img_names) if (txt_id, n) not in self.cache]
        ids = self.txt_db.combine_inputs(self.txt_db[txt_id]["input_ids"])
        for s in range(0, len(todo), self.batch_size):
            chunk = todo[s:s + self.batch_size]
            b = {k: v.to(self.device) for k, v in self._batch(ids, chunk).items()}
            scores, _ = self.model(b["input_ids"], b["position_ids"], b["img_feat"], b["img_pos_feat"], b["attn"])
            for name, value in zip(chunk, scores.float().view(-1).tolist()):
                self.cache[(txt_id, name)] = value
        self.pairs_scored += len(img_names)
        return np.array([self.cache[(txt_id, n)] for n in img_names], dtype=np.float32)


class MatrixScorer:
    """Scores looked up in an ``inf_itm.py`` score matrix (n_txt, n_img): ``results.npz`` is read with numpy
    (no pickle); the original ``results.bin`` pickle needs ``itr_iais.results_io`` (restricted unpickler)."""

    def __init__(self, path: str) -> None:
        target = Path(path)
        if target.is_dir():
            target = target / "results.npz" if (target / "results.npz").is_file() else target / "results.bin"
        require_file(target, "--uniter_results")
        if target.suffix == ".npz":
            try:
                with np.load(target, allow_pickle=False) as data:
                    scores, txt_ids, img_ids = data["scores"], list(map(str, data["txt_ids"])), \
                        list(map(str, data["img_ids"]))
            except (ValueError, KeyError, OSError) as err:
                fail(f"{target}: expected scores, txt_ids and img_ids arrays, found unreadable data ({err})")
        else:
            try:
                from itr_iais.results_io import load_results
            except ImportError:
                fail(f"{target}: reading the original results.bin pickle safely needs itr-iais; pass results.npz")
            tensor, txt_ids, img_ids = load_results(target)
            scores = tensor.float().numpy()
        self.scores = np.asarray(scores, dtype=np.float32)
        self.txt_pos = {t: i for i, t in enumerate(txt_ids)}
        self.img_pos = {t: i for i, t in enumerate(img_ids)}
        self.pairs_scored = 0

    def __call__(self, txt_id: str, img_names: Sequence[str]) -> np.ndarray:
        if txt_id not in self.txt_pos:
            fail(f"--uniter_results: caption {txt_id} not scored there")
        missing = [n for n in img_names if n not in self.img_pos]
        if missing:
            fail(f"--uniter_results: image {missing[0]} not scored there")
        self.pairs_scored += len(img_names)
        return self.scores[self.txt_pos[txt_id], [self.img_pos[n] for n in img_names]]


def recall_rows(split: EncodedSplit, top_img: np.ndarray, top_txt: np.ndarray, scorer, thresholds: Sequence[int]
                ) -> list[dict]:
    """Rows of the table: the bi-encoder alone, then re-ranked top M for each M.

    Each row has R@1/5/10 both ways (from the ranked lists) and ``i2t_metrics`` / ``t2i_metrics``
    (r1, r5, r10, medr, meanr) from exact ranks: a positive inside the re-ranked top M takes its new
    position, one outside keeps the bi-encoder's exact rank.
    """
    owners = split.img2txts
    i2t_exact, t2i_exact = exact_ranks(split)

    def row(img_lists: list[list[int]], txt_lists: list[list[int]]) -> dict:
        t2i_ranks = np.array([lst.index(split.txt2img[t]) if split.txt2img[t] in lst else t2i_exact[t]
                              for t, lst in enumerate(img_lists)])
        i2t_ranks = np.array([min([lst.index(o) for o in owners[i] if o in lst], default=i2t_exact[i])
                              for i, lst in enumerate(txt_lists)])
        t2i = [100 * float(np.mean(t2i_ranks < k)) for k in TOPS]
        i2t = [100 * float(np.mean(i2t_ranks < k)) for k in TOPS]
        return {"i2t": i2t, "t2i": t2i, "rsum": float(sum(i2t) + sum(t2i)),
                "i2t_metrics": list(metrics_from_ranks(i2t_ranks)), "t2i_metrics": list(metrics_from_ranks(t2i_ranks))}

    rows = [{"method": "bi-encoder", "M": None, **row([list(r) for r in top_img], [list(r) for r in top_txt])}]
    for m in thresholds:
        if hasattr(scorer, "reset"):
            scorer.reset()
        start = time.perf_counter()
        before = scorer.pairs_scored
        img_lists = []
        for t, cand in enumerate(progress(top_img[:, :m], desc=f"re-rank images, M={m}")):
            scores = scorer(split.txt_ids[t], [split.img_fnames[j] for j in cand])
            img_lists.append([int(cand[j]) for j in np.argsort(-scores, kind="stable")])
        txt_lists = []
        for i, cand in enumerate(progress(top_txt[:, :m], desc=f"re-rank texts, M={m}")):
            scores = np.array([float(scorer(split.txt_ids[j], [split.img_fnames[i]])[0]) for j in cand])
            txt_lists.append([int(cand[j]) for j in np.argsort(-scores, kind="stable")])
        rows.append({"method": "re-ranked", "M": m, "seconds": time.perf_counter() - start,
                     "pairs_scored": scorer.pairs_scored - before, **row(img_lists, txt_lists)})
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'method':<22}{'i2t R@1':>9}{'R@5':>8}{'R@10':>8}{'t2i R@1':>9}{'R@5':>8}{'R@10':>8}{'rsum':>9}"]
    for row in rows:
        name = row["method"] if row["M"] is None else f"re-ranked top {row['M']}"
        lines.append(f"{name:<22}" + "".join(f"{v:>8.2f} " for v in row["i2t"] + row["t2i"]).rstrip()
                     + f"{row['rsum']:>9.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[dict]:
    setup_logging(0)
    out = writable_dir(args.output_dir, "output_dir")
    device = pick_device(args.no_cuda)
    img_db = ImageDbGroup(args.conf_th, args.max_bb, args.min_bb, args.num_bb, args.compressed_db)[args.test_img_db]
    txt_db = TxtTokLmdb(args.test_txt_db, -1)
    model, img_dim = build_model(args, load_pretrained=False)
    check_img_dbs([img_db], img_dim, f"checkpoint {args.biencoder_checkpoint}")
    scorer = (MatrixScorer(args.uniter_results) if args.uniter_results else
              UniterScorer(args.uniter_checkpoint, args.uniter_config, txt_db, img_db, device, args.uniter_batch_size))
    model.to(device).eval()
    amp = Amp(AmpConfig.from_original(args.fp16, "O2" if args.fp16 else None, device))
    start = time.perf_counter()  # both models loaded, dbs open: stage 1, the bi-encoder's retrieval
    split = encode_split(model, txt_db, img_db, args.valid_batch_size, device, amp)
    top = max(args.thresholds)
    img_index = make_indexer(split.img.shape[1], args.hnsw_index)
    img_index.index_vectors(split.img)
    txt_index = make_indexer(split.txt.shape[1], args.hnsw_index)
    txt_index.index_vectors(split.txt)
    _, top_img = img_index.search(split.txt, min(top, len(split.img)))
    _, top_txt = txt_index.search(split.img, min(top, len(split.txt)))
    retrieve_s = time.perf_counter() - start
    thresholds = sorted({min(m, len(split.img)) for m in args.thresholds})
    rows = recall_rows(split, top_img, top_txt, scorer, thresholds)  # stage 2 of each M timed in its row
    print(table(rows))
    sys.stdout.flush()
    uniter_scores = "results file (pre-scored)" if args.uniter_results else "checkpoint"
    write_json_atomic(Path(out) / "rerank.json", {"rows": rows, "n_images": len(split.img),
                                                 "n_captions": len(split.txt), "retrieve_s": retrieve_s,
                                                 "uniter_scores": uniter_scores,
                                                 "checkpoint": str(args.biencoder_checkpoint)})
    for r in rows:
        name = "lightningdot" if r["M"] is None else f"lightningdot+rerank{r['M']}"
        rerank_s = r.get("seconds")
        result = RetrievalResult(r["i2t_metrics"], r["t2i_metrics"], protocol_name(len(split.img)),
                                 {"name": name, "M": r["M"], "seconds": rerank_s,
                                  "pairs_scored": r.get("pairs_scored"), "retrieve_s": retrieve_s,
                                  "rerank_s": rerank_s, "uniter_scores": None if rerank_s is None else uniter_scores},
                                 len(split.img), len(split.txt))
        # latency: stage 1 (encode both sides, index, search top max(M)) + stage 2 (this M's UNITER re-ranking)
        result.record_latency(retrieve_s + (rerank_s or 0.0))
        suffix = "" if r["M"] is None else f"_rerank{r['M']}"
        result.write_json(Path(out) / f"retrieval_result{suffix}.json")
    return rows


@cli_entry
def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
