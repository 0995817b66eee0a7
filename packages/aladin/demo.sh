#!/usr/bin/env bash
# make demo (ci/demo.sh runs this from packages/aladin): the README's train and test commands on the synthetic
# world with the joint tiny config (alignment head + distilled matching head), then one result row per head
# in $DEMO_RESULTS/aladin-{matching,alignment}.json. ALADIN fine-tunes its whole VinVL backbone, so on
# 2 CPU cores the demo uses the 'tiny' VinVL world with a 50-image test split (written here next to the
# outputs; chance rsum on it is 62) rather than the shared demo-size world.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
out=${DEMO_OUT:-$PWD/demo_out}
results=${DEMO_RESULTS:-$out/results}
world=$out/world_tiny
mkdir -p "$out" "$results"
itr-synth --out "$world" --layout vinvl --size tiny --n-test 50
data=(--data_dir "$world/coco_ir" --img_feat_file "$world/features/features.tsv"
      --eval_model_dir "$world/pretrained/checkpoint-0132780" --max_seq_length 50 --max_img_seq_length 34)
start=$(date +%s)
cd alad
python train.py "${data[@]}" --config configs/alad-alignment-and-matching-distill-tiny.yaml \
    --logger_name "$out/runs/alad-joint" --val_step 7000 --num_epochs 10 --num_workers 0 --log_step 50
for keys in test_img_keys_1k.tsv test_img_keys.tsv; do
    python test.py "${data[@]}" --eval_img_keys_file "$keys" --num_workers 0 \
        --load_checkpoint "$out/runs/alad-joint/model_best_rsum.pth.tar" --out "$out/test.${keys%.tsv}.json"
done
elapsed=$(( $(date +%s) - start ))
python - "$out/test.test_img_keys.json" "$results" "$elapsed" <<'PY'
import json, sys
from pathlib import Path
from itr_common.metrics import RetrievalResult
record, results, elapsed = json.load(open(sys.argv[1])), Path(sys.argv[2]), float(sys.argv[3])
for head in ("matching", "alignment"):
    result = RetrievalResult.from_dict(record["results"][head]["coco-5k"])
    result.extras.update(package="aladin", name=f"aladin-{head}", time_s=elapsed, world="tiny, 50 test images",
                         model=f"ALADIN {head} head, alad-alignment-and-matching-distill-tiny")
    result.write_json(results / f"aladin-{head}.json")
    (r1, r5, r10, *_), (q1, q5, q10, *_) = result.i2t, result.t2i
    print(f"aladin-{head:9} i2t {r1:.1f}/{r5:.1f}/{r10:.1f}  t2i {q1:.1f}/{q5:.1f}/{q10:.1f}  rsum {result.rsum:.1f}"
          f"  (chance 62)  time {elapsed:.0f}s")
PY
