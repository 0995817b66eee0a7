from __future__ import annotations

import pytest

from itr_common.metrics import RetrievalResult
from itr_common.results import collect_results, format_rows, main


def _result(r1: float, time_s: float | None = None) -> RetrievalResult:
    extras = {"time_s": time_s} if time_s is not None else {}
    return RetrievalResult(i2t=(r1, 50.0, 60.0, 2.0, 3.5), t2i=(10.0, 20.0, 30.0, 4.0, 6.0), protocol="1k",
                           extras=extras)


def test_table_rows_from_written_results(tmp_path, capsys):
    _result(40.0, time_s=12.34).write_json(tmp_path / "dime" / "i2t.json")
    _result(20.0).write_json(tmp_path / "iais.json")
    found = collect_results([tmp_path])
    assert [name for name, _ in found] == ["dime/i2t", "iais"]
    text = format_rows(found)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["run", "protocol", "i2t"]
    assert lines[1].split() == ["dime/i2t", "1k", "40.00", "50.00", "60.00", "10.00", "20.00", "30.00", "210.00",
                                "12.3"]
    assert lines[2].split()[-2:] == ["190.00", "-"]
    assert main([str(tmp_path)]) == 0
    assert "dime/i2t" in capsys.readouterr().out


def test_missing_folder_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "nope")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err
