"""The original script name (UNITER ``prepro.py``), ``--task itm`` added: ``python prepro.py --annotations
dataset_flickr30k.json --output txt_db/itm_flickr30k_train.db --task itm --toker bert-base-cased``."""

from itr_iais.prepro import main

if __name__ == "__main__":
    main()
