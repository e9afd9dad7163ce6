"""python -m minigpt.attention: a PNG of every head's attention for a checkpoint and a prompt."""
import struct

import numpy as np
import pytest

from minigpt import attention
from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import CharTokenizer

TEXT = "ROMEO: hello there\nJULIET: well met\n"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from minigpt.checkpoint import save_checkpoint
    tok = CharTokenizer.train(TEXT)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=3, n_embd=12)
    path = tmp_path_factory.mktemp("att") / "ckpt.npz"
    save_checkpoint(path, GPT(config, seed=0), tokenizer=tok)
    return str(path)


def png_size(path):
    """(width, height) from a PNG's IHDR chunk; AssertionError unless the file is a PNG."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_command_writes_a_png_of_every_head_with_the_tokens_on_the_axes(ckpt, tmp_path, capsys, monkeypatch):
    drawn = []
    real = attention.draw
    monkeypatch.setattr(attention, "draw", lambda *a, **k: drawn.append(real(*a, **k)) or drawn[-1])
    out = tmp_path / "att.png"
    assert attention.main(["--ckpt", ckpt, "--prompt", "ROMEO: hel", "--out", str(out)]) == 0
    width, height = png_size(out)
    assert width > 400 and height > 200
    fig, panels = drawn[0]
    assert [len(row) for row in panels] == [3, 3]                  # 2 layers x 3 heads
    heads = [ax for row in panels for ax in row]
    assert len(fig.axes) == len(heads) + 1                         # and one colour bar
    labels = [t.get_text() for t in heads[0].get_xticklabels()]
    assert labels == list("ROMEO:\u2423hel")                      # the tokens, a space made visible
    assert [t.get_text() for t in heads[-1].get_yticklabels()] == labels
    assert "2 layer(s) x 3 heads over 10 tokens" in capsys.readouterr().out


def test_masked_future_entries_are_blank_and_the_rows_are_the_models_weights(ckpt):
    from minigpt.checkpoint import load_model
    model, tok = load_model(ckpt)
    ids = tok.encode("JULIET")
    maps = attention.attention_maps(model, ids)
    assert len(maps) == 2 and maps[0].shape == (3, 6, 6)
    np.testing.assert_allclose(maps[1].sum(-1), 1.0, rtol=1e-5)
    fig, panels = attention.draw(maps, attention.token_labels(tok, ids))
    shown = panels[1][2].get_images()[0].get_array()
    assert shown.mask[0, 1] and not shown.mask[1, 0]               # s > t blank, s <= t drawn
    np.testing.assert_allclose(shown.data[np.tril_indices(6)], maps[1][2][np.tril_indices(6)])


def test_layer_picks_the_rows_drawn(ckpt, tmp_path, monkeypatch):
    drawn = []
    real = attention.draw
    monkeypatch.setattr(attention, "draw", lambda *a, **k: drawn.append(real(*a, **k)) or drawn[-1])
    assert attention.main(["--ckpt", ckpt, "--prompt", "ROMEO", "--layer", "1", "--out",
                           str(tmp_path / "a.png")]) == 0
    assert [len(row) for row in drawn[0][1]] == [3]
    assert drawn[0][1][0][0].get_title() == "layer 1, head 0"


@pytest.mark.parametrize("argv, message", [
    (["--ckpt", "{missing}", "--prompt", "R", "--out", "{out}"], "no checkpoint at"),
    (["--ckpt", "{ckpt}", "--prompt", "R\u00e9", "--out", "{out}"], "not in this tokenizer"),
    (["--ckpt", "{ckpt}", "--prompt", "", "--out", "{out}"], "--prompt is empty"),
    (["--ckpt", "{ckpt}", "--prompt", "R", "--layer", "2", "--out", "{out}"], "blocks 0..1"),
    (["--ckpt", "{ckpt}", "--prompt", "R", "--out", "{dir}/a.txt"], "must name a .png"),
    (["--ckpt", "{ckpt}", "--prompt", "R", "--out", "{dir}/no/such/a.png"], "cannot write"),
    (["--ckpt", "{ckpt}"], "required"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_status_2(ckpt, tmp_path, capsys, argv, message):
    paths = {"ckpt": ckpt, "missing": str(tmp_path / "nope.npz"), "out": str(tmp_path / "a.png"),
             "dir": str(tmp_path)}
    try:
        status = attention.main([a.format(**paths) for a in argv])
    except SystemExit as e:
        status = e.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "a.png").exists()
