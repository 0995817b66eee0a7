#!/usr/bin/env bash
# make demo, LightningDOT: the README commands on a tiny synthetic world (20 test images x 100 captions):
# pre-train (CMR + VMLM + SMRM), fine-tune the bi-encoder, evaluate with the faiss index, search, and re-rank the
# top M with a UNITER ITM model. Result rows: $DEMO_RESULTS/lightningdot.json (bi-encoder) and
# lightningdot-rerank.json (bi-encoder top 20 re-ranked by UNITER).
set -euo pipefail
pkg=$(cd "$(dirname "$0")" && pwd)
out=${DEMO_OUT:-$pkg/../../demo_out/lightningdot}
results=${DEMO_RESULTS:-$out/results}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny matrices: one thread is several times faster
rm -rf "$out/work" && mkdir -p "$out/work" "$results"
cd "$out/work"
start=$(date +%s)
python -m itr_common.synthetic --out synthetic --layout uniter --size tiny
ln -s "$pkg/config" config
# README: pre-training (tiny config: CMR, VMLM, MRFR, MRC-KL by mix_ratio), writes the LightningDot.pt layout
python "$pkg/pretrain.py" --config config/pretrain-tiny.json
# README: fine-tune on Flickr30K from the pre-trained checkpoint (bash/train_flickr.sh's --biencoder_checkpoint)
python "$pkg/train_itm.py" --config config/flickr30k_ft_tiny_config.json \
    --biencoder_checkpoint output/pretrain_tiny/ckpt/model_step_400.pt
# README: evaluation, plus the gallery index for search
python "$pkg/eval_itm.py" config/flickr30k_eval_tiny_config.json output/flickr_tiny/biencoder.best.pt \
    --splits test --save_embeddings output/index --vocab synthetic/bert --output_dir output/eval
lightningdot-search --index output/index "a white dog is close to a red ball" --topk 5
# re-ranker: a tiny UNITER with UNITER's ITM pre-training task (stand-in for an IAIS / UNITER ITM checkpoint;
# itr_iais.pretrain_itm trains it, so this step needs itr-iais, as in the monorepo)
if python -c "import itr_iais" 2>/dev/null; then
    python -m itr_iais.pretrain_itm --txt_db synthetic/txt_db/itm_flickr30k_train.db \
        --img_db synthetic/img_db/flickr30k --model_config synthetic/pretrained/uniter-tiny.json \
        --output output/uniter-tiny-itm.pt --num_train_steps 600
    python "$pkg/rerank.py" --config config/flickr30k_eval_tiny_config.json \
        --biencoder_checkpoint output/flickr_tiny/biencoder.best.pt --uniter_checkpoint output/uniter-tiny-itm.pt \
        --uniter_config synthetic/pretrained/uniter-tiny.json --thresholds 10 20 --output_dir output/rerank
else
    echo "itr-iais not installed: no UNITER re-ranker to train, re-ranking skipped"
fi
python - "$results" "$start" <<'PY'
import os, sys, time
from itr_common.metrics import RetrievalResult
elapsed = time.time() - float(sys.argv[2])
rows = [("output/eval/retrieval_result_test.json", "lightningdot.json", "lightningdot"),
        ("output/rerank/retrieval_result_rerank20.json", "lightningdot-rerank.json", "lightningdot+rerank20")]
for src, dst, name in rows:
    if not os.path.exists(src):
        continue
    result = RetrievalResult.from_json(src)
    result.extras.update(name=name, time_s=elapsed)
    result.write_json(f"{sys.argv[1]}/{dst}")
    print(result.table())
PY
