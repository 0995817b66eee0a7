"""Every paper's README training and real-data evaluation at the released model sizes (``make full-size``).

The code is :mod:`itr_common.compare.full_size` (its layout is tested in packages/common/tests/test_full_size.py).
"""

from itr_common.compare.full_size import main

if __name__ == "__main__":
    raise SystemExit(main())
