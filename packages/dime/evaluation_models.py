"""The original module name: ``evalrank_single`` / ``evalrank_ensemble``; run as a script it evaluates."""

from itr_dime.evaluate_models import main
from itr_dime.evaluation_models import EvalSettings, evalrank, evalrank_ensemble, evalrank_single

__all__ = ["EvalSettings", "evalrank", "evalrank_ensemble", "evalrank_single"]

if __name__ == "__main__":
    main()
