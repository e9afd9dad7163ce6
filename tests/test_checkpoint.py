"""Checkpoints: round trip, atomic writes, and a clear refusal of bad files."""
import json
import os
import zipfile

import numpy as np
import pytest

from minigpt.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from minigpt.model import GPT, GPTConfig
from minigpt.optim import AdamW
from minigpt.tokenizer import build_tokenizer

TINY = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)


def _trained(seed=0):
    """A tiny model and optimizer after two real steps, so m, v and t are non-trivial."""
    model = GPT(TINY, seed=seed)
    opt = AdamW(model.params, lr=1e-2, weight_decay=0.1)
    rng = np.random.default_rng(seed)
    for _ in range(2):
        idx = rng.integers(0, TINY.vocab_size, size=(2, 8))
        _, _, cache = model.forward(idx, np.roll(idx, -1, axis=1), train=True)
        opt.step(model.backward(cache))
    return model, opt


@pytest.fixture
def char_tokenizer():
    """A char tokenizer of "hello world" (8 distinct characters, within vocab 11)."""
    return build_tokenizer("char", "hello world")

def _saved_trained(tmp_path):
    """A `_trained()` model and its optimizer saved as tmp_path/ckpt.npz; returns (path, model)."""
    model, opt = _trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, opt)
    return path, model


def test_round_trip_restores_params_optimizer_and_metadata(tmp_path):
    model, opt = _trained()
    rng = np.random.default_rng(5)
    rng.random(3)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, opt, tokenizer=None, iter_num=7, best_val_loss=1.25,
                    train_args={"lr": 0.01, "note": "x"},
                    rng_state={"batch": rng.bit_generator.state})
    ck = load_checkpoint(path)
    assert ck["config"] == TINY and ck["iter_num"] == 7 and ck["best_val_loss"] == 1.25
    assert ck["train_args"] == {"lr": 0.01, "note": "x"}
    for k, p in model.params.items():
        assert ck["model"].params[k].dtype == np.float32
        np.testing.assert_array_equal(ck["model"].params[k], p)
        np.testing.assert_array_equal(ck["optimizer_state"]["m"][k], opt.m[k])
        np.testing.assert_array_equal(ck["optimizer_state"]["v"][k], opt.v[k])
    assert ck["optimizer_state"]["t"] == opt.t == 2
    restored = np.random.default_rng(0)
    restored.bit_generator.state = ck["rng_state"]["batch"]
    assert restored.random() == rng.random()       # the 128-bit state survives JSON


def test_infinite_best_val_loss_round_trips_as_inf(tmp_path):
    model, _ = _trained()
    save_checkpoint(tmp_path / "c.npz", model)
    ck = load_checkpoint(tmp_path / "c.npz")
    assert ck["best_val_loss"] == float("inf") and ck["optimizer_state"] is None


def test_tokenizer_travels_inside_the_checkpoint(tmp_path, char_tokenizer):
    tok = char_tokenizer
    model, _ = _trained()
    save_checkpoint(tmp_path / "c.npz", model, tokenizer=tok)
    loaded_model, loaded_tok = load_model(tmp_path / "c.npz")
    assert loaded_tok.encode("hello") == tok.encode("hello")
    assert loaded_tok.decode(tok.encode("world")) == "world"
    assert loaded_model.config == TINY


def test_save_replaces_atomically_and_leaves_no_temporary_file(tmp_path):
    model, opt = _trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, opt, iter_num=1)
    save_checkpoint(path, model, opt, iter_num=2)
    assert load_checkpoint(path)["iter_num"] == 2
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = _trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, opt, iter_num=3)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(path, model, opt, iter_num=4)
    monkeypatch.undo()
    assert load_checkpoint(path)["iter_num"] == 3
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04garbage"])
def test_damaged_file_is_refused(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="damaged or not a minigpt checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    path, model = _saved_trained(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)


def test_plain_npz_without_metadata_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, w=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a minigpt checkpoint"):
        load_checkpoint(path)


def _rewrite(path, **changes):
    """Copy an archive with some entries replaced (None deletes one)."""
    with np.load(path) as a:
        arrays = {k: a[k] for k in a.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(path, **arrays)


def test_parameter_of_another_shape_is_refused(tmp_path):
    path, model = _saved_trained(tmp_path)
    _rewrite(path, **{"param/h.0.attn.c_attn.weight": np.zeros((8, 9), np.float32)})
    with pytest.raises(CheckpointError, match="another model shape"):
        load_checkpoint(path)


def test_missing_parameter_is_refused(tmp_path):
    model, _ = _trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model)
    _rewrite(path, **{"param/ln_f.weight": None})
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)


def test_config_inconsistent_with_parameters_is_refused(tmp_path):
    model, _ = _trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model)
    with np.load(path) as a:
        meta = json.loads(a["meta"].tobytes().decode())
    meta["config"]["n_layer"] = 3
    _rewrite(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)


def test_corrupt_metadata_is_refused(tmp_path):
    model, _ = _trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model)
    _rewrite(path, meta=np.frombuffer(b"{not json", np.uint8))
    with pytest.raises(CheckpointError, match="invalid JSON"):
        load_checkpoint(path)


def test_checkpoint_is_a_plain_zip_of_npy_files(tmp_path, char_tokenizer):
    model, opt = _trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, opt, tokenizer=char_tokenizer)
    names = zipfile.ZipFile(path).namelist()
    assert "meta.npy" in names and "tokenizer.npy" in names
    assert sum(n.startswith("param/") for n in names) == len(model.params)


# ------------------------------------------------------------ every field and entry validated

def _meta_of(path):
    with np.load(path) as a:
        return json.loads(a["meta"].tobytes().decode())


def _with_meta(path, edit):
    meta = _meta_of(path)
    edit(meta)
    _rewrite(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))


def _set(*keys, value):
    def edit(meta):
        d = meta
        for k in keys[:-1]:
            d = d[k]
        if value is _set:
            del d[keys[-1]]
        else:
            d[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit, field", [
    (_set("iter_num", value=[1]), "iter_num"),
    (_set("iter_num", value="abc"), "iter_num"),
    (_set("iter_num", value=-3), "iter_num"),
    (_set("adam", "t", value=_set), "adam.t"),
    (_set("adam", "t", value=1.5), "adam.t"),
    (_set("adam", "betas", value="x"), "adam.betas"),
    (_set("best_val_loss", value="x"), "best_val_loss"),
    (_set("train_args", value=[1, 2]), "train_args"),
    (_set("rng_state", value="garbage"), "rng_state"),
    (_set("config", "block_size", value=16.0), "config.block_size"),
    (_set("config", "n_embd", value=True), "config.n_embd"),
    (_set("config", "dropout", value="0.1"), "config.dropout"),
    (_set("config", "extra", value=1), "config"),
    (_set("config", value=[1]), "config"),
])
def test_every_lying_metadata_field_is_named_as_damaged(tmp_path, edit, field):
    model, opt = _trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, opt, iter_num=2, train_args={"lr": 1e-3}, rng_state={"batch": {}})
    _with_meta(path, edit)
    with pytest.raises(CheckpointError, match=f"damaged checkpoint: {field}"):
        load_checkpoint(path)


@pytest.mark.parametrize("prefix", ["param/", "adam_m/", "adam_v/"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_or_moments_are_refused(tmp_path, prefix, bad):
    path, model = _saved_trained(tmp_path)
    w = model.state_dict()["h.1.mlp.c_fc.weight"].copy()
    w[3, 5] = bad
    _rewrite(path, **{prefix + "h.1.mlp.c_fc.weight": w})
    with pytest.raises(CheckpointError, match=f"damaged checkpoint: {prefix}h.1.mlp.c_fc.weight .*not finite"):
        load_checkpoint(path)


def test_a_float16_checkpoint_loads_as_float32(tmp_path):
    path, model = _saved_trained(tmp_path)
    with np.load(path) as a:
        arrays = {k: a[k].astype(np.float16) if k.startswith(("param/", "adam_m/")) else a[k] for k in a.files}
    np.savez(path, **arrays)
    ck = load_checkpoint(path)
    assert all(p.dtype == np.float32 for p in ck["model"].params.values())
    assert all(m.dtype == np.float32 for m in ck["optimizer_state"]["m"].values())
    assert np.allclose(ck["model"].params["wte.weight"], model.params["wte.weight"], atol=1e-3)


def _npy_header_only(shape, dtype="<f4"):
    """The bytes of a .npy file that declares `shape` but holds no data."""
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_an_unused_entry_is_never_read(tmp_path):
    model, opt = _trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, opt, iter_num=4)
    with zipfile.ZipFile(path, "a") as z:          # declares 1 TB, holds nothing
        z.writestr("junk.npy", _npy_header_only((1 << 40,), "|u1"))
    assert load_checkpoint(path)["iter_num"] == 4


def test_an_entry_declaring_more_bytes_than_the_file_holds_is_damaged_not_out_of_memory(tmp_path):
    path, model = _saved_trained(tmp_path)
    big = 1 << 38                                  # a vocabulary that needs 8 TB of wte
    _with_meta(path, _set("config", "vocab_size", value=big))
    with np.load(path) as a:
        arrays = {k: a[k] for k in a.files if k != "param/wte.weight"}
    np.savez(path, **arrays)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("param/wte.weight.npy", _npy_header_only((big, 8)))
    with pytest.raises(CheckpointError, match="damaged checkpoint: param/wte.weight declares"):
        load_checkpoint(path)


def test_an_absurd_layer_count_is_refused_before_anything_is_allocated(tmp_path):
    model, _ = _trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model)
    _with_meta(path, _set("config", "n_layer", value=10**6))
    with pytest.raises(CheckpointError, match="damaged checkpoint: config.n_layer"):
        load_checkpoint(path)


def test_a_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "ckpt.npz"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(fifo)


def test_a_tokenizer_with_a_repeated_merge_is_refused_in_a_checkpoint(tmp_path):
    from minigpt.tokenizer import BPETokenizer
    tok = BPETokenizer().train("hello hello world " * 20, 260)
    text = tok.to_json().replace('"merges": [\n[', '"merges": [\n[104, 101],\n[104, 101],\n[', 1)
    config = GPTConfig(vocab_size=270, block_size=8, n_layer=1, n_head=2, n_embd=8)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, GPT(config), tokenizer=tok)
    _rewrite(path, tokenizer=np.frombuffer(text.encode(), np.uint8))
    with pytest.raises(CheckpointError, match=r"merge 1 \(\[104, 101\]\) repeats merge 0"):
        load_checkpoint(path)


def test_an_entry_with_an_unknown_compression_method_is_damaged(tmp_path):
    path, model = _saved_trained(tmp_path)
    raw = bytearray(path.read_bytes())
    at = raw.rindex(b"PK\x01\x02")                 # the last central-directory entry
    raw[at + 10:at + 12] = (99).to_bytes(2, "little")
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match="damaged checkpoint: .* cannot be read"):
        load_checkpoint(path)
