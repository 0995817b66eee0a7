#!/usr/bin/env bash
# make demo (ci/demo.sh runs this from packages/selfalign): the README's training and evaluation commands of both
# variants, each with SelfAlign on and off (--selfalign 0: the plain CAMERA / VSRN baseline, same code), on the
# synthetic world, then four result rows (the SelfAlign row beside its baseline) in $DEMO_RESULTS/selfalign_*.json.
# On 2 CPU cores the demo uses a tiny world (written here next to the outputs, with a 50-image test split) and runs
# the CAMERA pair and the VSRN pair side by side.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny tensors: more threads only contend on 2 cores
here=$PWD
out=${DEMO_OUT:-$PWD/demo_out}
results=${DEMO_RESULTS:-$out/results}
world=$out/world_tiny
mkdir -p "$out" "$results"
itr-synth --out "$world" --layout precomp --size tiny --n-test 50 > /dev/null
learn=(--img_dim 32 --embed_size 32 --local_clu_num 16 --batch_size 8 --num_epochs ${DEMO_EPOCHS:-10}
       --learning_rate 5e-3 --lr_update 100 --workers 0 --log_step 1000 --val_step 100000)
camera=(--head 4 --smry_k 4)
vsrn=(--word_dim 16 --dim_vid 32 --dim_hidden 16 --dim_word 16 --max_len 20)

one() {  # variant selfalign name
    local variant=$1 selfalign=$2 name=$3 start text
    start=$(date +%s)
    if [ "$variant" = camera ]; then text=(--bert_path "$world/bert" "${camera[@]}"); else text=(--vocab_path "$world/vocab" "${vsrn[@]}"); fi
    cd "$here/${variant}_SelfAlign"
    python train.py --data_path "$world/data" --data_name f30k_precomp --logger_name "$out/runs/$name" \
        --selfalign "$selfalign" "${learn[@]}" "${text[@]}" > "$out/$name.log" 2>&1
    python evaluate_models.py --model_path "$out/runs/$name/model_best.pth.tar" --split test \
        --out "$results/selfalign_$name.json" >> "$out/$name.log" 2>&1
    echo $(( $(date +%s) - start )) > "$out/$name.time"
}
pair() { one "$1" 0 "$1_base" && one "$1" 1 "$1_selfalign"; }

start=$(date +%s)
pair camera & cam=$!
pair vsrn & vs=$!
wait $cam || { tail -5 "$out"/camera_*.log; exit 1; }
wait $vs || { tail -5 "$out"/vsrn_*.log; exit 1; }
elapsed=$(( $(date +%s) - start ))
python - "$results" "$out" "$elapsed" <<'PY'
import json, sys
from pathlib import Path
results, out, elapsed = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
labels = {"camera_base": "CAMERA", "camera_selfalign": "CAMERA+SelfAlign", "vsrn_base": "VSRN",
          "vsrn_selfalign": "VSRN+SelfAlign"}
for name, label in labels.items():
    path = results / f"selfalign_{name}.json"
    record = json.loads(path.read_text())
    seconds = float((out / f"{name}.time").read_text())
    record["extras"].update(package="selfalign", name=f"selfalign {label}", model=f"{label}, tiny config",
                            world="tiny (50 test images)", time_s=seconds)
    path.write_text(json.dumps(record, indent=2))
    i2t, t2i = record["i2t"], record["t2i"]
    print(f"selfalign {label:17} i2t {i2t['r1']:.1f}/{i2t['r5']:.1f}/{i2t['r10']:.1f}  "
          f"t2i {t2i['r1']:.1f}/{t2i['r5']:.1f}/{t2i['r10']:.1f}  rsum {record['rsum']:.1f}  time {seconds:.0f}s")
print(f"selfalign demo: {elapsed:.0f}s (two pairs in parallel)")
PY
