#!/usr/bin/env bash
# The original bash/download_data.sh fetched the checkpoints and meta files below into ./data. Nothing is
# downloaded here (no network in CI): this script lists what is missing, with the original URLs, so they can
# be fetched by hand. Run from the package folder:  bash bash/download_data.sh
set -uo pipefail
base=https://acvrpublicycchen.blob.core.windows.net/lightningdot
missing=0
check() {  # local path, url
    if [ -e "$1" ]; then
        echo "ok       $1"
    else
        echo "missing  $1   <- $2"
        missing=1
    fi
}
for f in LightningDot.pt uniter-base.pt bert-base-cased.pt coco-ft.pt flickr-ft.pt; do
    check "./data/model/$f" "$base/$f"
done
check ./data/meta/coco_meta.json "$base/coco_meta.json"
check ./data/meta/flickr_meta.json "$base/flickr_meta.json"
for d in itm_coco_train itm_coco_restval itm_coco_val itm_coco_test itm_flickr30k_train itm_flickr30k_val \
         itm_flickr30k_test; do
    check "./data/db/${d}_base-cased.db" "UNITER txt_db (UNITER's download_itm.sh, renamed *_base-cased.db)"
done
for d in coco_train2014 coco_val2014 flickr30k; do
    check "./data/img/$d" "UNITER img_db (UNITER's download_itm.sh)"
done
echo "a local bert-base-cased directory (config.json, pytorch_model.bin, vocab.txt) goes in txt_model_config"
exit $missing
