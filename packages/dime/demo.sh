#!/usr/bin/env bash
# make demo (ci/demo.sh runs this from packages/dime): the README's training commands for both directions and
# the ensemble evaluation, on the synthetic world, then the result row in $DEMO_RESULTS/dime.json.
# DIME scores every image-caption pair with its routed interaction network, so on 2 CPU cores the demo uses
# the 'tiny' world (written here next to the outputs) rather than the shared demo-size world.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny tensors: more threads only contend on 2 cores
out=${DEMO_OUT:-$PWD/demo_out}
results=${DEMO_RESULTS:-$out/results}
world=$out/world_tiny
mkdir -p "$out" "$results"
itr-synth --out "$world" --layout precomp --size tiny
tiny=(--img_dim 32 --embed_size 32 --hid_IMRC 64 --hid_router 32 --num_head_IMRC 4 --batch_size 8 --num_epochs 16
      --learning_rate 2e-3 --lr_update 12 --workers 0 --log_step 100)
start=$(date +%s)
python train.py --data_path "$world/data" --bert_path "$world/bert" --data_name f30k_precomp \
    --logger_name "$out/runs/filker_DIME_i2t" --direction i2t --extra_stc 1 --lambda_softmax=4 "${tiny[@]}"
python train.py --data_path "$world/data" --bert_path "$world/bert" --data_name f30k_precomp \
    --logger_name "$out/runs/filker_DIME_t2i" --direction t2i --extra_img 1 --lambda_softmax=9 "${tiny[@]}"
python evaluate_models.py --model_path "$out/runs/filker_DIME_i2t/model_best.pth.tar" \
    --model_path2 "$out/runs/filker_DIME_t2i/model_best.pth.tar" --split test --out "$results/dime.json"
elapsed=$(( $(date +%s) - start ))
python - "$results/dime.json" "$elapsed" <<'PY'
import json, sys
path, elapsed = sys.argv[1], float(sys.argv[2])
record = json.load(open(path))
record["extras"].update(package="dime", model="DIME* (i2t + t2i ensemble), tiny config", world="tiny", time_s=elapsed)
json.dump(record, open(path, "w"), indent=2)
i2t, t2i = record["i2t"], record["t2i"]
print(f"dime  i2t {i2t['r1']:.1f}/{i2t['r5']:.1f}/{i2t['r10']:.1f}  t2i {t2i['r1']:.1f}/{t2i['r5']:.1f}/{t2i['r10']:.1f}"
      f"  rsum {record['rsum']:.1f}  time {elapsed:.0f}s")
PY
