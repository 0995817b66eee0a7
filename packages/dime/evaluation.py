"""The original module name: encoding, sharded scoring and recalls; run as a script it evaluates."""

from itr_dime.evaluate_models import main
from itr_dime.evaluation import encode_split, evaluate_encoded, protocol_for, score_matrix

__all__ = ["encode_split", "evaluate_encoded", "protocol_for", "score_matrix"]

if __name__ == "__main__":
    main()
