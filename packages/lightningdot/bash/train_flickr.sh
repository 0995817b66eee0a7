#!/usr/bin/env bash
# The original bash/train_flickr.sh: a learning-rate sweep of Flickr30K fine-tuning from LightningDot.pt
# (batch 96, project_dim 768, fp16 O2, retrieval_mode both), one run per GPU, each logging into its folder.
# Run from the package folder:  bash bash/train_flickr.sh [OUTPUT_ROOT]
set -euo pipefail
output_root=${1:-/storage/flickr-bert-two_stream}
img_ckpt=./data/model/uniter-base.pt
biencoder_ckpt=./data/model/LightningDot.pt
batch=96
run_exp() {  # gpu lr
    local gpu=$1 lr=$2
    local out="$output_root/${lr}_${batch}_0_none_0.0_768_both_run1"
    mkdir -p "$out"
    echo "GPU $gpu: lr $lr -> $out"
    CUDA_VISIBLE_DEVICES=$gpu python train_itm.py --config ./config/flickr30k_ft_config.json \
        --learning_rate "$lr" --train_batch_size "$batch" --output_dir "$out" --fp16 --num_hard_negatives 0 \
        --project_name itm_flickr --caption_score_weight 0.0 --hard_negatives_sampling none --fp16_opt_level O2 \
        --project_dim 768 --img_checkpoint "$img_ckpt" --retrieval_mode both \
        --biencoder_checkpoint "$biencoder_ckpt" > "$out/log" 2>&1 &
}
run_exp 0 1e-5
run_exp 1 2e-5
run_exp 2 5e-5
run_exp 3 8e-5
wait
