"""Gather every bench_out/*.json into bench_out/report.{md,json} (run at the end of ``make bench``).

The code is :mod:`itr_common.compare.bench_report` (tested in packages/common/tests/test_compare.py).
"""

from itr_common.compare.bench_report import main

if __name__ == "__main__":
    raise SystemExit(main())
