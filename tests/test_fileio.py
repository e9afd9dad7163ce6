"""minigpt.fileio: atomic writes, the out-dir lock, stale temporaries, and safe reading."""
import json
import os

import pytest

from minigpt.fileio import (TMP_PREFIX, FileError, atomic_write, claim_dir, loads_json, read_bytes,
                            require_regular_file)


def test_a_second_claim_on_a_folder_is_refused_while_the_first_holds_it(tmp_path):
    with claim_dir(tmp_path):
        with pytest.raises(FileError, match="another minigpt run is using"):
            with claim_dir(tmp_path):
                pass
    with claim_dir(tmp_path):                      # released at the end of the first run
        pass


def test_claiming_a_folder_removes_stale_temporaries_and_nothing_else(tmp_path):
    (tmp_path / (TMP_PREFIX + "abc123")).write_bytes(b"x" * 1000)
    (tmp_path / "ckpt.npz").write_bytes(b"keep")
    (tmp_path / "notes.tmp-1").write_bytes(b"keep")
    with claim_dir(tmp_path):
        names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".minigpt"))
    assert names == ["ckpt.npz", "notes.tmp-1"]


def test_claim_refuses_a_file_in_the_place_of_the_folder(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(FileError, match="is a file, not a folder"):
        with claim_dir(tmp_path / "out"):
            pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_claim_refuses_a_read_only_folder(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(FileError, match="cannot write"):
        with claim_dir(tmp_path / "ro"):
            pass


def test_a_failed_write_is_one_file_error_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda f: f.write(b"old"))

    def full(f):
        raise OSError(28, "No space left on device")
    with pytest.raises(FileError, match="No space left on device"):
        atomic_write(path, full)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_deeply_nested_json_is_a_value_error_not_a_recursion_error():
    with pytest.raises(ValueError, match="nested more than"):
        loads_json("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match="nested more than"):
        loads_json('{"a":' * 200_000 + "1" + "}" * 200_000)
    assert loads_json('{"[[[[": ["]]]"], "b": [[1]]}') == {"[[[[": ["]]]"], "b": [[1]]}
    assert loads_json(json.dumps([[[[1]]]])) == [[[[1]]]]


def test_a_pipe_is_read_once_and_whole(pipe_path):
    assert read_bytes(pipe_path(b"hello pipe")) == b"hello pipe"


def test_a_fifo_or_a_folder_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FileError, match="not a regular file"):
        require_regular_file(fifo, "checkpoint")     # refused without opening it (which would hang)
    with pytest.raises(FileError, match="is a directory"):
        require_regular_file(tmp_path, "checkpoint")
    with pytest.raises(FileError, match="no checkpoint at"):
        require_regular_file(tmp_path / "nope", "checkpoint")
