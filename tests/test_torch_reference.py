"""minigpt against an independent PyTorch GPT-2 (benchmarks/torch_gpt2.py): same weights,
same batch -> same logits, loss, every gradient, and the same AdamW trajectory."""
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from torch_gpt2 import TorchGPT, make_adamw  # noqa: E402

from minigpt.gradcheck import rel_error  # noqa: E402
from minigpt.model import GPT, GPTConfig  # noqa: E402
from minigpt.optim import AdamW  # noqa: E402

CONFIG = GPTConfig(vocab_size=37, block_size=16, n_layer=3, n_head=4, n_embd=32)


def pair(dtype, config=CONFIG, seed=0):
    model = GPT(config, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    for p in model.params.values():                  # perturb so biases/LN matter
        p += (0.05 * rng.standard_normal(p.shape)).astype(dtype)
    ref = TorchGPT(config).load_minigpt_params(model.params)
    idx = rng.integers(0, config.vocab_size, size=(4, config.block_size))
    targets = rng.integers(0, config.vocab_size, size=(4, config.block_size))
    targets[1, :3] = -1
    return model, ref, idx, targets


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_logits_loss_and_every_gradient_equal_pytorch(dtype, tol):
    model, ref, idx, targets = pair(dtype)
    logits, loss, cache = model.forward(idx, targets)
    grads = model.backward(cache)
    t_logits, t_loss = ref(torch.as_tensor(idx), torch.as_tensor(targets))
    t_loss.backward()
    t_grads = ref.grads_by_minigpt_name()
    assert rel_error(logits, t_logits.detach().numpy()) < tol
    assert abs(float(loss) - t_loss.item()) < tol * abs(t_loss.item())
    assert set(grads) == set(t_grads)
    errors = {k: rel_error(grads[k], t_grads[k]) for k in grads}
    assert max(errors.values()) < tol, {k: e for k, e in errors.items() if e >= tol}


def test_five_adamw_steps_follow_pytorch():
    model, ref, idx, targets = pair(np.float64)
    opt = AdamW(model.params, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    t_opt = make_adamw(ref, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for _ in range(5):
        _, loss, cache = model.forward(idx, targets)
        opt.step(model.backward(cache))
        t_opt.zero_grad()
        _, t_loss = ref(torch.as_tensor(idx), torch.as_tensor(targets))
        t_loss.backward()
        t_opt.step()
        assert abs(float(loss) - t_loss.item()) < 1e-9
    theirs = ref.minigpt_params()
    assert max(rel_error(model.params[k], theirs[k]) for k in theirs) < 1e-9


def test_torch_train_runs_minigpts_recipe_with_pytorch_and_lands_where_minigpt_does(tmp_path, capsys):
    # benchmarks/torch_train.py: the default run's recipe with PyTorch's model and AdamW, whose
    # best val loss docs/speed.md sets beside minigpt's. Same flags, same batches, same start:
    # the two runs must end at the same loss (to float32 rounding over the steps).
    import math

    import torch_train
    from minigpt.checkpoint import load_checkpoint
    from minigpt.train import main as minigpt_main
    text = tmp_path / "tiny.txt"
    text.write_text((Path(__file__).resolve().parents[1] / "shakespeare.txt").read_text(encoding="utf-8")[:20000],
                    encoding="utf-8")
    flags = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "8",
             "--eval-iters", "4", "--sample-tokens", "10", "--max-time", "0", "--max-iters", "40",
             "--lr", "1e-2", "--warmup-iters", "5"]
    assert torch_train.main([str(text), "--out-dir", str(tmp_path / "torch"), *flags]) == 0
    assert "torch.optim.AdamW in minigpt's training loop" in capsys.readouterr().out
    assert minigpt_main([str(text), "--out-dir", str(tmp_path / "minigpt"), *flags]) == 0
    by_torch, by_minigpt = (load_checkpoint(tmp_path / d / "ckpt.npz") for d in ("torch", "minigpt"))
    assert by_torch["iter_num"] == by_minigpt["iter_num"] == 40
    vocab = by_minigpt["config"].vocab_size
    assert by_torch["best_val_loss"] < math.log(vocab) - 0.5            # it trained
    assert abs(by_torch["best_val_loss"] - by_minigpt["best_val_loss"]) < 0.01
