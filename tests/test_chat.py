"""python -m minigpt.sample --interactive (minigpt.chat): one load, a prompt per line read from a
pipe, each answer streamed with the command line's settings, the end at an empty line or EOF."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
TEXT = "ROMEO: hello there\nJULIET: well met\n"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A random text model, and a task model whose greedy answer is always its end marker."""
    from minigpt.checkpoint import save_checkpoint
    folder = tmp_path_factory.mktemp("chat")
    tok = CharTokenizer.train(TEXT)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8)
    save_checkpoint(folder / "text.npz", GPT(config, seed=0), tokenizer=tok)
    small = CharTokenizer("ab\n")
    model = GPT(GPTConfig(vocab_size=3, block_size=8, n_layer=1, n_head=1, n_embd=32), seed=0)
    model.params["ln_f.weight"][:] = 0.0           # the head reads only ln_f's bias: always "\n"
    model.params["ln_f.bias"][:] = 50.0 * model.params["wte.weight"][small.stoi["\n"]]
    save_checkpoint(folder / "task.npz", model, tokenizer=small, train_args={"end_marker": "\n"})
    save_checkpoint(folder / "notask.npz", model, tokenizer=small, train_args={})
    return folder


def piped(stdin, *argv):
    """python -m minigpt.sample ARGV with stdin fed through a pipe: (status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "minigpt.sample", *argv], input=stdin.encode(),
                          capture_output=True, cwd=ROOT, env=env, timeout=120)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def one_shot(ckpt, prompt, *flags):
    status, out, _ = piped("", "--ckpt", str(ckpt), "--prompt", prompt, *flags)
    assert status == 0 and out.startswith(prompt)
    return out[len(prompt):]


def test_each_line_of_a_pipe_is_a_prompt_answered_with_the_flags_until_an_empty_line(ckpts):
    flags = ["--greedy", "--max-new-tokens", "12", "--device", "cpu"]
    status, out, err = piped("ROMEO:\nJULIET: w\n\nhello\n", "--ckpt", str(ckpts / "text.npz"),
                             "--interactive", *flags)
    assert status == 0 and err == ""
    # the same answers as one run per prompt with the same settings, and nothing after the empty line
    text = ckpts / "text.npz"
    assert out == one_shot(text, "ROMEO:", *flags) + one_shot(text, "JULIET: w", *flags)


def test_a_seed_makes_a_sampled_session_reproducible_and_max_new_tokens_holds_per_answer(ckpts):
    argv = ["--ckpt", str(ckpts / "text.npz"), "--interactive", "--seed", "4", "--max-new-tokens", "7",
            "--temperature", "1.5"]
    first, second = piped("R\nJ\n", *argv), piped("R\nJ\n", *argv)
    assert first == second and first[0] == 0
    assert len(first[1]) == 2 * (7 + 1)                # 7 characters and a newline per answer


def test_a_task_checkpoints_answers_stop_at_its_end_marker(ckpts):
    status, out, _ = piped("ab\nba\n", "--ckpt", str(ckpts / "task.npz"), "--interactive", "--greedy",
                           "--max-new-tokens", "5")
    assert (status, out) == (0, "\n\n")               # each answer ended at once, at "\n"
    status, out, _ = piped("ab\nba\n", "--ckpt", str(ckpts / "notask.npz"), "--interactive", "--greedy",
                           "--max-new-tokens", "5")
    assert (status, out) == (0, "\n" * 12)            # no marker: 5 newlines and the answer's end


def test_end_of_input_ends_the_session_and_a_bad_prompt_is_one_line_then_the_next(ckpts):
    flags = ["--greedy", "--max-new-tokens", "3"]
    status, out, err = piped("ROMEO:\nQ\u00e9\nJULIET:", "--ckpt", str(ckpts / "text.npz"), "--interactive",
                             *flags)
    assert status == 2                                 # a prompt failed, the others were answered
    assert err.count("\n") == 1 and "not in this tokenizer" in err and "Traceback" not in err
    assert out == one_shot(ckpts / "text.npz", "ROMEO:", *flags) + one_shot(ckpts / "text.npz", "JULIET:", *flags)
    status, out, err = piped("", "--ckpt", str(ckpts / "text.npz"), "--interactive")
    assert (status, out, err) == (0, "", "")


def test_interactive_refuses_a_prompt_flag_in_one_line(ckpts):
    status, out, err = piped("x\n", "--ckpt", str(ckpts / "text.npz"), "--interactive", "--prompt", "R")
    assert status == 2 and out == "" and err.count("\n") == 1 and "drop --prompt" in err


def test_the_model_is_loaded_once_for_the_whole_session(ckpts, monkeypatch, capsys):
    from minigpt import checkpoint, sample
    loads, real = [], checkpoint.load_checkpoint
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a, **k: loads.append(a) or real(*a, **k))
    r, w = os.pipe()
    os.write(w, b"ROMEO:\nJULIET:\nR\n")
    os.close(w)
    with os.fdopen(r) as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        assert sample.main(["--ckpt", str(ckpts / "text.npz"), "--interactive", "--max-new-tokens", "4"]) == 0
    assert len(loads) == 1 and capsys.readouterr().out.count("\n") >= 3
