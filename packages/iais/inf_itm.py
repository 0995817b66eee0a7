"""The original script name: ``python inf_itm.py --txt_db ... --img_db ... --checkpoint ... --output_dir ...``."""

from itr_iais.inf_itm import main

if __name__ == "__main__":
    raise SystemExit(main())
