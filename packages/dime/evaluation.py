"""The original module name (LgQu/DIME ``evaluation.py``): ``from evaluation import evalrank, encode_data, i2t, t2i``
works as in the original; run as a script it evaluates (``evaluate_models.py``'s flags)."""

from itr_common.logging import AverageMeter, LogCollector
from itr_dime.evaluate_models import main
from itr_dime.evaluation import encode_split, evaluate_encoded, protocol_for, score_matrix
from itr_dime.evaluation_api import calItr, encode_data, evalrank, get_test_loader, i2t, t2i

__all__ = [
    "AverageMeter",
    "LogCollector",
    "calItr",
    "encode_data",
    "encode_split",
    "evalrank",
    "evaluate_encoded",
    "get_test_loader",
    "i2t",
    "protocol_for",
    "score_matrix",
    "t2i",
]

if __name__ == "__main__":
    main()
