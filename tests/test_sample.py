"""minigpt.sample and minigpt.kvcache: cache equals recompute, the filters keep to their sets,
streamed text is exact, and the CLI fails in one line."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigpt.kvcache import KVCache, forward_cached
from minigpt.model import GPT, GPTConfig
from minigpt.sample import TextStream, filter_logits, generate, sample_next

CONFIG = GPTConfig(vocab_size=11, block_size=12, n_layer=2, n_head=2, n_embd=8)


def model_of(dtype, seed=0, config=CONFIG):
    """A random model with non-trivial LayerNorm and bias values, so no term hides."""
    model = GPT(config, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1)
    for name, p in model.params.items():
        if p.ndim == 1:
            p += rng.normal(0, 0.2, p.shape).astype(dtype)
        else:
            p *= 10                                # std 0.2: attention far from uniform
    return model


MODEL64 = model_of(np.float64)


@given(data=st.data())
def test_kv_cache_logits_equal_full_recompute_for_any_chunking(data):
    B = data.draw(st.integers(1, 2))
    T = data.draw(st.integers(1, CONFIG.block_size))
    idx = np.array(data.draw(st.lists(st.lists(st.integers(0, CONFIG.vocab_size - 1),
                                                min_size=T, max_size=T), min_size=B, max_size=B)))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, T - 1), max_size=4)) if T > 1 else []))
    full, _, _ = MODEL64.forward(idx)
    cache = KVCache(MODEL64, B)
    pieces = [forward_cached(MODEL64, idx[:, a:b], cache) for a, b in zip([0] + cuts, cuts + [T])]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=0, atol=1e-12)
    assert cache.length == T


def test_kv_cache_keeps_float32_and_matches_recompute_at_float32_precision():
    model = model_of(np.float32)
    idx = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, CONFIG.block_size))
    cache = KVCache(model, 2)
    first = forward_cached(model, idx[:, :5], cache)
    rest = [forward_cached(model, idx[:, t:t + 1], cache, last_only=True) for t in range(5, 12)]
    full, _, _ = model.forward(idx)
    assert first.dtype == np.float32 and rest[0].dtype == np.float32
    assert cache.k[0].dtype == np.float32
    np.testing.assert_allclose(np.concatenate([first] + rest, axis=1), full, atol=2e-5)


def test_kv_cache_refuses_to_overflow_block_size():
    cache = KVCache(MODEL64, 1)
    forward_cached(MODEL64, np.zeros((1, CONFIG.block_size), dtype=np.int64), cache)
    with pytest.raises(ValueError, match="exceed block_size"):
        forward_cached(MODEL64, np.zeros((1, 1), dtype=np.int64), cache)


@given(seed=st.integers(0, 2**32 - 1), prompt_len=st.integers(1, 15), new=st.integers(1, 20),
       temperature=st.sampled_from([0.0, 0.7, 1.0, 1.5]))
def test_generation_with_cache_equals_without_even_after_the_window_slides(
        seed, prompt_len, new, temperature):
    prompt = np.random.default_rng(seed).integers(0, CONFIG.vocab_size, (2, prompt_len))
    runs = [generate(MODEL64, prompt, new, temperature, top_k=8, top_p=0.9,
                     rng=np.random.default_rng(seed), use_cache=c) for c in (True, False)]
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0][:, :prompt_len], prompt)


def test_greedy_generation_is_deterministic_and_follows_the_argmax():
    model = model_of(np.float32, seed=3)
    prompt = np.array([[1, 2, 3]])
    a = generate(model, prompt, 15, temperature=0.0, rng=np.random.default_rng(1))
    b = generate(model, prompt, 15, temperature=0.0, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    for t in range(3, a.shape[1]):                 # each token is the arg-max given the past
        logits, _, _ = model.forward(a[:, max(0, t - CONFIG.block_size):t])
        assert a[0, t] == np.argmax(logits[0, -1])


logit_rows = st.lists(st.floats(-20, 20), min_size=2, max_size=30).map(np.array)


@given(logits=logit_rows, k=st.integers(1, 30), seed=st.integers(0, 1000))
def test_top_k_never_samples_outside_the_k_most_likely(logits, k, seed):
    probs = filter_logits(logits, 1.0, top_k=k)
    k = min(k, len(logits))
    assert (probs > 0).sum() <= k
    kth_largest = np.sort(logits)[-k]
    assert np.all(logits[probs > 0] >= kth_largest)
    draws = sample_next(np.tile(logits, (50, 1)), 1.0, top_k=k, rng=np.random.default_rng(seed))
    assert np.all(logits[draws] >= kth_largest)


@given(logits=logit_rows, p=st.floats(0.01, 0.99), seed=st.integers(0, 1000))
def test_top_p_never_samples_outside_the_smallest_set_holding_mass_p(logits, p, seed):
    full = np.exp(logits - logits.max())
    full /= full.sum()
    order = np.argsort(-full, kind="stable")
    n = int(np.searchsorted(np.cumsum(full[order]), p) + 1)   # smallest prefix with mass >= p
    nucleus = set(order[:n].tolist())
    probs = filter_logits(logits, 1.0, top_p=p)
    support = set(np.flatnonzero(probs).tolist())
    assert support == nucleus
    draws = sample_next(np.tile(logits, (50, 1)), 1.0, top_p=p, rng=np.random.default_rng(seed))
    assert set(draws.tolist()) <= support


def test_temperature_zero_puts_all_mass_on_the_argmax():
    probs = filter_logits(np.array([0.5, 3.0, -1.0]), temperature=0.0)
    np.testing.assert_array_equal(probs, [0.0, 1.0, 0.0])


class ByteTokenizer:
    """One token per UTF-8 byte: a character can take up to four tokens."""
    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


@given(text=st.text(max_size=40))
def test_streamed_text_equals_the_text_even_when_a_character_spans_tokens(text):
    stream = TextStream(ByteTokenizer())
    pieces = [stream.push(b) for b in text.encode("utf-8")]
    assert "".join(pieces) + stream.finish() == text
    assert not any("\ufffd" in p for p in pieces)


@given(before=st.text(max_size=20), stop=st.text(min_size=1, max_size=4), after=st.text(max_size=10))
def test_stream_stops_before_the_first_stop_string_and_never_prints_it(before, stop, after):
    text = before + stop + after
    stream = TextStream(ByteTokenizer(), stop=[stop])
    printed = ""
    for b in text.encode("utf-8"):
        printed += stream.push(b)
        if stream.stopped:
            break
    printed += stream.finish()
    assert stream.stopped
    assert printed == text[:text.find(stop)]


# ---------------------------------------------------------------- the command line

TEXT = "ROMEO: hello there\nJULIET: well met\n"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from minigpt.checkpoint import save_checkpoint
    from minigpt.tokenizer import CharTokenizer
    tokenizer = CharTokenizer.train(TEXT)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8)
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.npz"
    save_checkpoint(path, GPT(config, seed=0), tokenizer=tokenizer)
    return str(path)


def run_cli(*argv):
    from minigpt.sample import main
    return main(list(argv))


def test_cli_streams_one_write_per_token_and_a_seed_reproduces_the_sample(ckpt, capsys, monkeypatch):
    writes = []
    import sys
    real_write = sys.stdout.write
    monkeypatch.setattr(sys.stdout, "write", lambda s: writes.append(s) or real_write(s))
    args = ["--ckpt", ckpt, "--prompt", "ROMEO:", "--max-new-tokens", "30", "--temperature", "0.8",
            "--top-k", "200", "--top-p", "0.95", "--seed", "1", "--device", "cpu"]
    assert run_cli(*args) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 30 + 1
    assert len(writes) >= 30                       # printed as generated, not at the end
    assert run_cli(*args) == 0
    assert capsys.readouterr().out == out
    assert run_cli(*args, "--no-cache") == 0       # the cache changes the speed, not the text
    assert capsys.readouterr().out == out


def test_cli_prints_every_sample_and_stops_at_a_stop_string(ckpt, capsys):
    assert run_cli("--ckpt", ckpt, "--prompt", "J", "--max-new-tokens", "40", "--seed", "3",
                   "--num-samples", "3", "--stop", "e") == 0
    samples = capsys.readouterr().out.split("\n" + "-" * 16 + "\n")
    assert len(samples) == 3
    assert all(s.startswith("J") and "e" not in s for s in samples)


@pytest.mark.parametrize("argv, message", [
    (["--ckpt", "{missing}"], "no checkpoint at"),
    (["--ckpt", "{damaged}"], "damaged"),
    (["--ckpt", "{ckpt}", "--prompt", "ROMEO: \u00e9"], "not in this tokenizer"),
    (["--ckpt", "{ckpt}", "--top-p", "1.5"], "--top-p"),
    (["--ckpt", "{ckpt}", "--temperature", "-1"], "--temperature"),
    (["--ckpt", "{ckpt}", "--max-new-tokens", "many"], "--max-new-tokens"),
    (["--ckpt", "{ckpt}", "--top-k", "0"], "--top-k"),
    (["--ckpt", "{ckpt}", "--pretrained", "x"], "not allowed with"),
    ([], "required"),
])
def test_cli_bad_input_is_one_line_on_stderr_and_exit_status_2(ckpt, tmp_path, capsys, argv, message):
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    paths = {"ckpt": ckpt, "missing": str(tmp_path / "nope.npz"), "damaged": str(damaged)}
    with pytest.raises(SystemExit) as e:
        run_cli(*[a.format(**paths) for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_cli_asks_for_cupy_by_its_pip_name_when_cuda_is_missing(ckpt, capsys, monkeypatch):
    from minigpt import backend
    monkeypatch.setattr(backend, "_cupy", lambda: None)
    with pytest.raises(SystemExit) as e:
        run_cli("--ckpt", ckpt, "--device", "cuda")
    assert e.value.code == 2
    assert "cupy-cuda12x" in capsys.readouterr().err


def test_cli_tf32_is_an_opt_in_flag_for_the_gpu(capsys):
    from minigpt.sample import build_parser
    assert build_parser().parse_args(["--ckpt", "x.npz"]).tf32 is False
    with pytest.raises(SystemExit) as e:
        run_cli("--help")
    assert e.value.code == 0
    assert "--tf32 on the GPU, TF32 tensor-core matmuls" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_cli_tf32_on_the_cpu_is_one_line_on_stderr_and_exit_status_2(ckpt, capsys, device):
    from minigpt.backend import gpu_available
    if device == "auto" and gpu_available():
        pytest.skip("this machine has a GPU, so --device auto is cuda")
    with pytest.raises(SystemExit) as e:
        run_cli("--ckpt", ckpt, "--device", device, "--tf32")
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""                      # refused before generating anything
    assert captured.err.count("\n") == 1 and "--tf32 is for GPUs" in captured.err
    assert "Traceback" not in captured.err


def test_cli_tf32_on_a_gpu_turns_tf32_on_and_samples(ckpt, capsys, monkeypatch):
    from minigpt import sample
    from minigpt.backend import gpu_available
    if not gpu_available():
        pytest.skip("needs CuPy and a CUDA GPU")
    calls = []                                     # a spy, so the TF32 switch does not outlive the test
    monkeypatch.setattr(sample, "enable_tf32", lambda device: calls.append(device))
    assert run_cli("--ckpt", ckpt, "--device", "cuda", "--tf32", "--max-new-tokens", "5", "--seed", "0") == 0
    assert calls == ["cuda"] and capsys.readouterr().out


def test_module_entry_point_exits_2_without_a_traceback(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "minigpt.sample", "--ckpt", str(tmp_path / "x.npz")],
                       cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


# ------------------------------------------------------------ inputs that used to crash or hang

@pytest.mark.parametrize("temperature", [1e-320, 5e-324, 1e-300])
def test_a_tiny_temperature_is_greedy_not_nan(temperature):
    logits = np.array([[1.0, 3.0, 2.0, -5.0]], dtype=np.float32)
    probs = filter_logits(logits[0], temperature)
    assert np.all(np.isfinite(probs)) and probs.argmax() == 1
    assert sample_next(logits, temperature, rng=np.random.default_rng(0))[0] == 1


@pytest.mark.parametrize("bad", [-1, 11])
def test_generate_refuses_ids_outside_the_vocabulary(bad):
    with pytest.raises(ValueError, match=f"token id {bad} is outside"):
        generate(MODEL64, np.array([[bad, 2, 3]]), 2)


def test_generate_never_draws_an_id_at_or_above_the_tokenizers_vocabulary():
    ids = generate(MODEL64, np.array([[1, 2]]), 30, temperature=5.0, rng=np.random.default_rng(0),
                   vocab_size=4)
    assert ids[0, 2:].max() < 4


def test_cli_temperature_1e_320_samples_without_a_traceback(ckpt, capsys):
    assert run_cli("--ckpt", ckpt, "--prompt", "J", "--max-new-tokens", "5", "--temperature", "1e-320",
                   "--seed", "1", "--device", "cpu") == 0
    assert capsys.readouterr().out.startswith("J")


def test_cli_on_a_fifo_is_refused_at_once_not_a_hang(tmp_path):
    import os
    import subprocess
    import sys
    fifo = tmp_path / "ckpt.npz"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "minigpt.sample", "--ckpt", str(fifo), "--device", "cpu"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_top_k_keeps_the_k_largest_even_when_the_shift_rounds_them_into_a_tie():
    logits = np.array([0.0, 1.0, -2.39e-226, 0.0])      # minus the max, -2.39e-226 rounds to -1 like the 0s
    for _ in range(20):
        probs = filter_logits(logits, 1.0, top_k=3)
        assert probs[2] == 0 and (probs > 0).sum() == 3


def test_cli_refuses_an_empty_stop_text(capsys):
    from minigpt.sample import main
    with pytest.raises(SystemExit) as e:
        main(["--pretrained", "nowhere", "--stop", "", "--device", "cpu"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and '--stop ""' in err, err
