"""itr_common.fileio: atomic writes (all or nothing, no temp file left) and JSON reads with one-line errors."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

from itr_common.errors import UserError
from itr_common.fileio import (
    atomic_open,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
    write_lines_atomic,
    write_text_atomic,
)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------- writing
def test_writer_raising_mid_way_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = write_bytes_atomic(tmp_path / "model.bin", b"old contents")
    with pytest.raises(RuntimeError, match="crashed"):
        with atomic_open(path, "wb") as handle:
            handle.write(b"half of the new ")
            raise RuntimeError("crashed")
    assert path.read_bytes() == b"old contents"
    assert _names(tmp_path) == ["model.bin"]


def test_new_file_appears_only_when_the_block_succeeds(tmp_path):
    path = tmp_path / "out.txt"
    with atomic_open(path, "w") as handle:
        handle.write("first part, ")
        (temp,) = [p for p in tmp_path.iterdir()]  # the temp file sits beside the target, hidden
        assert re.fullmatch(r"\.out\.txt\..+\.tmp", temp.name)
        assert not path.exists()
        handle.write("second part")
    assert path.read_text(encoding="utf-8") == "first part, second part"
    assert _names(tmp_path) == ["out.txt"]


def test_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(tmp_path / "never.bin") as handle:
            handle.write(b"x")
            raise KeyboardInterrupt
    assert _names(tmp_path) == []


def test_parent_folders_are_created_and_the_path_returned(tmp_path):
    path = tmp_path / "a" / "b" / "data.bin"
    assert write_bytes_atomic(str(path), b"\x00\x01") == path
    assert path.read_bytes() == b"\x00\x01"


def test_text_and_lines_are_utf8_with_lf_newlines(tmp_path):
    text = write_text_atomic(tmp_path / "t.txt", "caf\u00e9\nline two\n")
    assert text.read_bytes() == "caf\u00e9\nline two\n".encode()
    lines = write_lines_atomic(tmp_path / "l.txt", (w for w in ["[PAD]", "\u00fcber", "dog"]))
    assert lines.read_bytes() == "[PAD]\n\u00fcber\ndog\n".encode()
    assert write_lines_atomic(tmp_path / "empty.txt", []).read_bytes() == b""


def test_write_json_layout_and_default(tmp_path):
    path = write_json_atomic(tmp_path / "v.json", {"b": 1, "a": [1, 2]})
    assert path.read_text(encoding="utf-8") == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'
    compact = write_json_atomic(tmp_path / "c.json", {"b": 1, "a": 2}, indent=None, sort_keys=True)
    assert compact.read_text(encoding="utf-8") == '{"a": 2, "b": 1}\n'
    converted = write_json_atomic(tmp_path / "d.json", {"x": {1, 2}}, indent=None, default=sorted)
    assert json.loads(converted.read_text(encoding="utf-8")) == {"x": [1, 2]}


def test_write_json_of_an_unserialisable_value_keeps_the_old_file(tmp_path):
    path = write_json_atomic(tmp_path / "v.json", {"version": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"version": object()})
    assert json.loads(path.read_text(encoding="utf-8")) == {"version": 1}
    assert _names(tmp_path) == ["v.json"]


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
def test_permissions_are_those_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.bin"
    with open(plain, "wb") as handle:
        handle.write(b"x")
    atomic = write_bytes_atomic(tmp_path / "atomic.bin", b"x")
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_only_write_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="expected mode"):
        with atomic_open(tmp_path / "x.bin", "ab"):
            pass
    assert _names(tmp_path) == []


# ------------------------------------------------------------------------------------------- reading
def test_read_json_returns_the_value(tmp_path):
    (tmp_path / "ok.json").write_text('{"caf\u00e9": [1, 2.5, null]}', encoding="utf-8")
    assert read_json(tmp_path / "ok.json", "map", expect=dict) == {"caf\u00e9": [1, 2.5, None]}
    assert read_json(str(tmp_path / "ok.json")) == {"caf\u00e9": [1, 2.5, None]}


def test_read_json_missing_file_or_folder_is_named(tmp_path):
    with pytest.raises(UserError, match=r"missing\.json: txt_db meta not found$"):
        read_json(tmp_path / "missing.json", "txt_db meta")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(UserError, match=r"folder\.json: expected a JSON file, found a directory$"):
        read_json(tmp_path / "folder.json")


def test_read_json_invalid_json_names_file_and_what(tmp_path):
    bad = tmp_path / "meta.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError) as err:
        read_json(bad, "txt_db meta")
    assert str(err.value).startswith(f"{bad}: expected txt_db meta as JSON, found invalid JSON (Expecting")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"meta\.json: expected JSON file, found invalid JSON"):
        read_json(bad)  # "as JSON" is not repeated when ``what`` already says JSON


def test_read_json_bad_encoding_is_invalid_json(tmp_path):
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"caf\u00e9": 1}'.encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1\.json: expected config as JSON, found invalid JSON \(.*utf-8"):
        read_json(latin1, "config")


def test_read_json_wrong_type_names_expected_and_found(tmp_path):
    path = tmp_path / "id2len.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UserError, match=r"id2len\.json: expected a JSON object \(txt_db id2len\), found a JSON array$"):
        read_json(path, "txt_db id2len", expect=dict)
    path.write_text('"text"', encoding="utf-8")
    with pytest.raises(UserError, match=r"expected a JSON number \(threshold\), found a JSON string$"):
        read_json(path, "threshold", expect=(int, float))
    with pytest.raises(UserError, match=r"expected a JSON object or array \(list\), found a JSON string$"):
        read_json(path, "list", expect=(dict, list))
    assert read_json(path, "name", expect=str) == "text"
