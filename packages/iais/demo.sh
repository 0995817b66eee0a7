#!/usr/bin/env bash
# make demo, IAIS: the README commands on a tiny synthetic world; the result row goes to $DEMO_RESULTS/iais.json.
# The cross-encoder scores every (caption, image) pair with a transformer pass, so the demo writes its own
# tiny world (20 test images x 100 captions) instead of the shared demo world (500 x 2,500 = 1.25M pairs).
set -euo pipefail
pkg=$(cd "$(dirname "$0")" && pwd)
out=${DEMO_OUT:-$pkg/../../demo_out/iais}
results=${DEMO_RESULTS:-$out/results}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny matrices: one thread is several times faster
rm -rf "$out/work" && mkdir -p "$out/work" "$results"
cd "$out/work"
start=$(date +%s)
python -m itr_common.synthetic --out synthetic --layout uniter --size tiny
ln -s "$pkg/config" config
# stand-in for uniter-base.pt: UNITER's ITM pre-training task on the synthetic train split (~30 s)
python -m itr_iais.pretrain_itm --txt_db synthetic/txt_db/itm_flickr30k_train.db \
    --img_db synthetic/img_db/flickr30k --model_config synthetic/pretrained/uniter-tiny.json \
    --output output/pretrained/uniter-tiny-itm.pt
# README: finetune with hard negatives + IAIS (tiny config)
python "$pkg/train_itm_hard_negatives.py" --config config/train-itm-flickr-tiny-hn.json --IAIS singular
# README-style evaluation of the final checkpoint
python "$pkg/inf_itm.py" --txt_db synthetic/txt_db/itm_flickr30k_test.db --img_db synthetic/img_db/flickr30k \
    --checkpoint output/itm/flickr/tiny_hard_neg/ckpt/model_step_500_final.pt \
    --model_config synthetic/pretrained/uniter-tiny.json --output_dir output/inf_itm
python - "$results/iais.json" "$start" <<'PY'
import sys, time
from itr_common.metrics import RetrievalResult
result = RetrievalResult.from_json("output/inf_itm/retrieval_result.json")
result.extras.update(name="iais", time_s=time.time() - float(sys.argv[2]))
result.write_json(sys.argv[1])
print(result.table())
PY
