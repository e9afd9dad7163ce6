"""minigpt.pretrained: GPT-2 directories load exactly (checked against transformers), export
round-trips, and anything that is not a usable GPT-2 directory is one clear error."""
import json
import shutil

import numpy as np
import pytest

from minigpt.bpe_gpt2 import GPT2_ASSETS, bytes_to_unicode
from minigpt.model import GPT, GPTConfig
from minigpt.pretrained import (PretrainedError, export_safetensors, load_pretrained,
                                model_from_pretrained)
from minigpt.safetensors import load_file, save_file
from minigpt.sample import generate, main

TINY_VOCAB = 260          # 256 bytes, 3 merges, <|endoftext|>
EOT = TINY_VOCAB - 1
CONFIG = GPTConfig(vocab_size=TINY_VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=8)


def write_tiny_bpe(directory):
    """A GPT-2-format tokenizer (vocab.json, merges.txt) small enough for a tiny model."""
    char = bytes_to_unicode()
    vocab = {char[b]: b for b in range(256)}
    merges = [("t", "h"), ("th", "e"), ("Ġ", "a")]
    for rank, (a, b) in enumerate(merges):
        vocab[a + b] = 256 + rank
    vocab["<|endoftext|>"] = EOT
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def random_model(config=CONFIG, seed=0):
    model = GPT(config, seed=seed)
    rng = np.random.default_rng(seed)
    for p in model.params.values():                # non-trivial LayerNorms and biases too
        p += rng.normal(0, 0.1, p.shape).astype(p.dtype)
    return model


@pytest.fixture
def tiny_dir(tmp_path):
    model = random_model()
    export_safetensors(model, tmp_path)
    write_tiny_bpe(tmp_path)
    return tmp_path, model


def test_an_exported_directory_loads_through_model_from_pretrained_with_identical_logits(tiny_dir):
    directory, model = tiny_dir
    loaded = model_from_pretrained(str(directory))
    assert loaded.config == model.config
    idx = np.random.default_rng(0).integers(0, TINY_VOCAB, (2, CONFIG.block_size))
    np.testing.assert_array_equal(loaded.forward(idx)[0], model.forward(idx)[0])
    _, tokenizer = load_pretrained(directory)
    assert tokenizer.vocab_size == TINY_VOCAB
    assert tokenizer.encode("the a") == [257, 258]


def test_openai_names_with_mask_buffers_and_a_tied_head_load(tmp_path):
    model = random_model()
    tensors = dict(model.state_dict())             # no "transformer." prefix, as OpenAI's files
    T = CONFIG.block_size
    for i in range(CONFIG.n_layer):
        tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, T, T), np.float32))
        tensors[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    tensors["lm_head.weight"] = tensors["wte.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "vocab_size": TINY_VOCAB, "n_ctx": T, "n_embd": 8,
         "n_layer": 2, "n_head": 2}))
    loaded = model_from_pretrained(tmp_path)
    assert list(loaded.params) == list(model.params)
    for k, p in model.params.items():
        np.testing.assert_array_equal(loaded.params[k], p)


def test_float16_weights_and_sharded_files_load_as_float32(tiny_dir):
    directory, model = tiny_dir
    tensors, _ = load_file(directory / "model.safetensors")
    names = sorted(tensors)
    (directory / "model.safetensors").unlink()
    half = {k: v.astype(np.float16) for k, v in tensors.items()}
    save_file({k: half[k] for k in names[:5]}, directory / "model-00001-of-00002.safetensors")
    save_file({k: half[k] for k in names[5:]}, directory / "model-00002-of-00002.safetensors")
    weight_map = {k: f"model-0000{1 + (i >= 5)}-of-00002.safetensors" for i, k in enumerate(names)}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = model_from_pretrained(directory)
    for k, p in model.params.items():
        assert loaded.params[k].dtype == np.float32
        np.testing.assert_array_equal(loaded.params[k], p.astype(np.float16).astype(np.float32))


def config_edit(key, value):
    def edit(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg[key] = value
        (d / "config.json").write_text(json.dumps(cfg))
    return edit


def rewrite_tensors(change):
    def edit(d):
        tensors, meta = load_file(d / "model.safetensors")
        change(tensors)
        save_file(tensors, d / "model.safetensors", meta)
    return edit


def untie(t):
    t["lm_head.weight"] = t["transformer.wte.weight"] + 1


def pickle_only(d):
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"not read")


def truncate(d):
    path = d / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])


@pytest.mark.parametrize("edit, message", [
    (lambda d: (d / "config.json").unlink(), "cannot read .*config.json"),
    (lambda d: (d / "config.json").write_text("{oops"), "not valid JSON"),
    (config_edit("model_type", "llama"), "model_type 'llama'"),
    (config_edit("activation_function", "relu"), "activation_function 'relu'"),
    (config_edit("n_embd", 16), "shape"),
    (config_edit("n_layer", "2"), "n_layer must be an integer"),
    (config_edit("n_head", 3), "divisible"),
    (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
    (pickle_only, "pytorch_model.bin, which minigpt does not read"),
    (truncate, "truncated"),
    (rewrite_tensors(lambda t: t.pop("transformer.ln_f.bias")), "missing \\['ln_f.bias'\\]"),
    (rewrite_tensors(lambda t: t.update(extra=np.zeros(2, np.float32))), "unexpected tensors"),
    (rewrite_tensors(untie), "untied"),
    (rewrite_tensors(lambda t: t.update({"transformer.ln_f.bias": np.zeros(8, np.int32)})), "dtype"),
])
def test_an_unusable_directory_is_one_clear_error(tiny_dir, edit, message):
    directory, _ = tiny_dir
    edit(directory)
    with pytest.raises(PretrainedError, match=message):
        load_pretrained(directory)


def test_a_missing_directory_or_tokenizer_is_a_clear_error(tiny_dir, tmp_path):
    with pytest.raises(PretrainedError, match="not a directory"):
        load_pretrained(tmp_path / "absent")
    directory, _ = tiny_dir
    (directory / "merges.txt").unlink()
    with pytest.raises(PretrainedError, match="no tokenizer files"):
        load_pretrained(directory)


@pytest.mark.parametrize("names", [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")])
def test_gpt2_tokenizer_files_in_the_directory_are_used(tmp_path, names):
    model = GPT(GPTConfig(vocab_size=50257, block_size=8, n_layer=1, n_head=1, n_embd=4))
    export_safetensors(model, tmp_path)
    shutil.copy(GPT2_ASSETS / "encoder.json", tmp_path / names[0])
    shutil.copy(GPT2_ASSETS / "vocab.bpe", tmp_path / names[1])
    _, tokenizer = load_pretrained(tmp_path)
    assert tokenizer.encode("Hello world<|endoftext|>", allowed_special="all") == [15496, 995, 50256]


def test_cli_continues_a_prompt_from_a_pretrained_directory(tiny_dir, capsys):
    directory, _ = tiny_dir
    argv = ["--pretrained", str(directory), "--prompt", "the", "--max-new-tokens", "6",
            "--greedy", "--device", "cpu", "--ignore-eot"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first and first.startswith("the")


def test_cli_stops_at_endoftext_unless_told_not_to(tmp_path, capsys):
    model = random_model()
    P = model.params
    P["wte.weight"][EOT] *= 50                      # every position now prefers <|endoftext|>
    P["ln_f.weight"][:] = 0.0
    P["ln_f.bias"][:] = P["wte.weight"][EOT]
    export_safetensors(model, tmp_path)
    write_tiny_bpe(tmp_path)
    base = ["--pretrained", str(tmp_path), "--prompt", "the", "--max-new-tokens", "3", "--greedy"]
    assert main(base) == 0
    assert capsys.readouterr().out == "the\n"
    assert main(base + ["--ignore-eot"]) == 0
    assert capsys.readouterr().out == "the" + "<|endoftext|>" * 3 + "\n"


def test_cli_refuses_a_bad_directory_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--pretrained", str(tmp_path), "--prompt", "hi"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json" in err


# ---------------------------------------------------------------- against transformers


def hf_model(seed=0):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=TINY_VOCAB, n_positions=32, n_embd=32, n_layer=3,
                                  n_head=4, bos_token_id=EOT, eos_token_id=EOT)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():                  # LayerNorms and biases away from 1 and 0
            p.add_(torch.randn_like(p) * 0.1)
    return torch, hf


def test_logits_and_greedy_continuation_equal_transformers_gpt2(tmp_path):
    torch, hf = hf_model()
    hf.save_pretrained(tmp_path)
    write_tiny_bpe(tmp_path)
    model, _ = load_pretrained(tmp_path)
    idx = np.random.default_rng(0).integers(0, TINY_VOCAB, (2, 32))
    with torch.no_grad():
        ref = hf(torch.from_numpy(idx)).logits.numpy()
    np.testing.assert_allclose(model.forward(idx)[0], ref, rtol=0, atol=1e-4)
    prompt = idx[:1, :5]
    with torch.no_grad():
        ref_ids = hf.generate(torch.from_numpy(prompt), max_new_tokens=20, do_sample=False,
                              pad_token_id=EOT).numpy()
    np.testing.assert_array_equal(generate(model, prompt, 20, temperature=0.0), ref_ids)


def test_an_exported_minigpt_model_loads_in_transformers_with_equal_logits(tmp_path):
    torch, _ = hf_model()
    from transformers import GPT2LMHeadModel
    model = random_model(GPTConfig(vocab_size=TINY_VOCAB, block_size=16, n_layer=2, n_head=2,
                                   n_embd=16))
    export_safetensors(model, tmp_path)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = np.random.default_rng(1).integers(0, TINY_VOCAB, (2, 16))
    with torch.no_grad():
        ref = hf(torch.from_numpy(idx)).logits.numpy()
    np.testing.assert_allclose(model.forward(idx)[0], ref, rtol=0, atol=1e-4)


# ------------------------------------------------------------ files that would give wrong results

def test_non_finite_weights_are_refused(tiny_dir):
    directory, model = tiny_dir
    tensors, meta = load_file(directory / "model.safetensors")
    tensors["transformer.h.0.mlp.c_fc.weight"][0, 0] = np.nan
    save_file(tensors, directory / "model.safetensors", meta)
    with pytest.raises(PretrainedError, match="h.0.mlp.c_fc.weight .*not finite"):
        load_pretrained(directory)


def test_a_deeply_nested_config_json_is_a_clear_error(tiny_dir):
    directory, _ = tiny_dir
    (directory / "config.json").write_text("[" * 200_000)
    with pytest.raises(PretrainedError, match="nested more than"):
        load_pretrained(directory)


def test_a_model_vocabulary_larger_than_the_tokenizer_never_samples_an_undecodable_id(tmp_path, capsys):
    config = GPTConfig(vocab_size=TINY_VOCAB + 40, block_size=16, n_layer=1, n_head=2, n_embd=8)
    model = GPT(config, seed=0)
    model.params["ln_f.weight"][:] = 0.0           # the final hidden state is all ones, so
    model.params["ln_f.bias"][:] = 1.0             # the 40 padding rows get the largest logits
    model.params["wte.weight"][TINY_VOCAB:] = 1.0
    export_safetensors(model, tmp_path)
    write_tiny_bpe(tmp_path)
    for mode in (["--greedy"], ["--seed", "0", "--top-k", "50"]):
        assert main(["--pretrained", str(tmp_path), "--prompt", "the", "--max-new-tokens", "8",
                     "--ignore-eot", "--device", "cpu", *mode]) == 0
        assert capsys.readouterr().out.startswith("the")


def test_an_absurd_layer_count_is_refused_before_naming_its_parameters(tiny_dir):
    directory, _ = tiny_dir
    config_edit("n_layer", 10**6)(directory)
    with pytest.raises(PretrainedError, match="n_layer 1000000, but the weights hold only"):
        load_pretrained(directory)


def test_a_layer_norm_epsilon_that_is_not_a_number_is_a_clear_error(tiny_dir):
    directory, _ = tiny_dir
    config_edit("layer_norm_epsilon", "x")(directory)
    with pytest.raises(PretrainedError, match="layer_norm_epsilon must be a number"):
        load_pretrained(directory)


def test_a_tensor_in_two_shards_is_refused_not_silently_taken_from_the_last(tiny_dir):
    directory, _ = tiny_dir
    tensors, _ = load_file(directory / "model.safetensors")
    names = sorted(tensors)
    (directory / "model.safetensors").unlink()
    other = dict(tensors, **{names[0]: tensors[names[0]] + 1})
    save_file({k: tensors[k] for k in names[:5]}, directory / "a.safetensors")
    save_file({k: other[k] for k in names[:1] + names[5:]}, directory / "b.safetensors")
    weight_map = {k: "a.safetensors" if i < 5 else "b.safetensors" for i, k in enumerate(names)}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(PretrainedError, match=f"{names[0]} is in more than one"):
        load_pretrained(directory)


@pytest.mark.parametrize("eot", [299, 5, EOT + 1])      # a gap after the merges, a byte's id, a gap of one
def test_an_endoftext_id_that_leaves_a_gap_or_repeats_a_byte_is_refused_at_load(tiny_dir, eot):
    directory, _ = tiny_dir
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    vocab["<|endoftext|>"] = eot
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(PretrainedError, match=r'"special_tokens" must map strings to the ids 259'):
        load_pretrained(directory)
