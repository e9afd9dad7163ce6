"""What the bad-input tests share (test_reliability*.py): a tiny model's flags, a corpus of the
first 20,000 characters of shakespeare.txt, `minigpt.train` run in this process, and the check
that an error is one line on stderr."""
from pathlib import Path

import pytest

from minigpt.train import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "2", "--log-interval", "5", "--sample-tokens", "10", "--max-time", "0"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text((ROOT / "shakespeare.txt").read_text(encoding="utf-8")[:20000], encoding="utf-8")
    return path


def train(corpus, out, *flags):
    return main([str(corpus), "--out-dir", str(out), *TINY, *map(str, flags)])


def one_line(capsys, status, expected=2):
    err = capsys.readouterr().err
    assert status == expected and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err
