"""LgQu/DIME ``evaluation_models.py``: ``evalrank_single``, ``evalrank_ensemble``, the ensemble ``i2t`` / ``t2i``.

As the original README says: edit the paths below, then ``python evaluation_models.py``. ``model_path2`` set:
the ensemble DIME* (mean of the i2t and the t2i model's scores). ``data_path = None`` keeps the path saved
in the checkpoint. Flags on the command line (``python evaluation_models.py --model_path ... --fold5``) take
the place of these lines (``evaluate_models.py``'s flags).
"""

# ---- edit these --------------------------------------------------------------------------------------
model_path = "pretrain_model/flickr/Flickr30K_DIME_it.pth.tar"
model_path2 = None  # e.g. "pretrain_model/flickr/Flickr30K_DIME_ti.pth.tar" for the ensemble
data_path = None  # e.g. "/to/data/path/"
split = "test"  # Flickr30K: "test"; COCO: "testall"
fold5 = False  # COCO 1K: True (mean over five 1K folds); COCO 5K: False
# -------------------------------------------------------------------------------------------------------

import sys  # noqa: E402

from itr_dime.evaluate_models import main  # noqa: E402
from itr_dime.evaluation_api import calItr, encode_data  # noqa: E402
from itr_dime.evaluation_api import i2t as i2t_single  # noqa: E402
from itr_dime.evaluation_api import t2i as t2i_single  # noqa: E402
from itr_dime.evaluation_models import (  # noqa: E402
    EvalSettings,
    evalrank,
    evalrank_ensemble,
    evalrank_single,
    i2t,
    run_configured,
    t2i,
)

__all__ = [
    "EvalSettings",
    "calItr",
    "encode_data",
    "evalrank",
    "evalrank_ensemble",
    "evalrank_single",
    "i2t",
    "i2t_single",
    "t2i",
    "t2i_single",
]

if __name__ == "__main__":
    if len(sys.argv) > 1:
        main()
    else:
        run_configured(model_path, model_path2, data_path, split, fold5)
