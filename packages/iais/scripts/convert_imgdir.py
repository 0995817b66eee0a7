"""The original script name (UNITER/IAIS ``scripts/convert_imgdir.py``): ``python scripts/convert_imgdir.py
--img_dir $NPZ_DIR --output $IMG_DB [--nproc 8 --compress --keep_all --conf_th 0.2 --max_bb 100 --min_bb 10
--num_bb 100]``."""

from itr_iais.convert_imgdir import main

if __name__ == "__main__":
    main()
