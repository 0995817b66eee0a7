#!/usr/bin/env bash
# bash scripts/download_itm.sh $PATH_TO_STORAGE [--datasets flickr,coco] [--checksums SHA256SUMS]
#
# As the IAIS README's first step, but it downloads nothing: it creates img_db/ txt_db/ pretrained/ finetune/
# under $PATH_TO_STORAGE, prints for each step (image dbs, text dbs, pretrained models) the wget/tar commands
# of what is missing, and checks what is there (LMDBs readable, JSON maps, texts -> images, checkpoints).
# Exit 0: complete; 1: something to fetch or repair (listed); 2: bad arguments.
# To build the dbs from raw data instead: prepro.py --task itm and scripts/convert_imgdir.py (README).
set -u
PYTHON_BIN=${PYTHON:-python3}
command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python
exec "$PYTHON_BIN" -m itr_iais.download_itm "$@"
