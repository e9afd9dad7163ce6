"""Run OpenAI's GPT-2 in NumPy: load a Hugging Face GPT-2 directory, or export one.

minigpt's model is GPT-2 exactly, its parameters carry GPT-2's names and its
weights GPT-2's (in, out) layout, so loading the released weights is renaming
at most: drop the `transformer.` prefix, skip the causal-mask buffers
(`h.N.attn.bias`, `h.N.attn.masked_bias`) and the tied `lm_head.weight`.

A directory as Hugging Face stores gpt2, gpt2-medium, gpt2-large or gpt2-xl:

    config.json           n_embd, n_head, n_layer, n_positions, vocab_size, ...
    model.safetensors     the weights (or model.safetensors.index.json + shards)
    vocab.json, merges.txt   the BPE tokenizer (or OpenAI's encoder.json, vocab.bpe)

Nothing is downloaded: the user points at files they already have. Pickled
`pytorch_model.bin` files are refused, since unpickling can run code.
"""
import json
import math
import os
import re

import numpy as np

from .model import GPT, GPTConfig, param_shapes, params_mismatch
from .fileio import FileError, atomic_write, loads_json, read_regular_text
from .safetensors import SafetensorsError, load_file, read_header, save_file

GPT2_VOCAB_SIZE = 50257
BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)$")   # causal masks, not parameters
TOKENIZER_FILES = [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")]


class PretrainedError(ValueError):
    """A GPT-2 directory is missing, incomplete, or holds something other than GPT-2."""


def _read_config(directory):
    """config.json as a dict, checked to describe a GPT-2 minigpt can run exactly."""
    path = os.path.join(directory, "config.json")
    if not os.path.isdir(directory):
        raise PretrainedError(f"{directory} is not a directory: give a folder with GPT-2's config.json, "
                              f"model.safetensors, vocab.json and merges.txt (minigpt downloads nothing)")
    try:
        cfg = loads_json(read_regular_text(path, "GPT-2 config.json"))
    except FileError as e:                     # missing, a folder, a FIFO (refused, not waited on)
        raise PretrainedError(f"cannot read {path} ({e})") from None
    except OSError as e:
        raise PretrainedError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise PretrainedError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise PretrainedError(f"{path} is not a JSON object")
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise PretrainedError(f"{path}: layer_norm_epsilon must be a number, got {eps!r}")
    model_type = cfg.get("model_type", "gpt2")
    unsupported = [
        (model_type != "gpt2", f"model_type {model_type!r} (minigpt runs GPT-2 only)"),
        (cfg.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"),
         f"activation_function {cfg.get('activation_function')!r} (GPT-2 uses gelu_new)"),
        (not math.isclose(cfg.get("layer_norm_epsilon", 1e-5), 1e-5),
         f"layer_norm_epsilon {cfg.get('layer_norm_epsilon')} (minigpt uses 1e-5)"),
        (cfg.get("n_inner") not in (None, 4 * cfg.get("n_embd", 0)), "n_inner other than 4 * n_embd"),
        (not cfg.get("scale_attn_weights", True), "scale_attn_weights false"),
        (cfg.get("scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx"),
        (not cfg.get("tie_word_embeddings", True), "untied word embeddings"),
        (cfg.get("add_cross_attention", False), "cross-attention"),
    ]
    for bad, what in unsupported:
        if bad:
            raise PretrainedError(f"{path}: {what} is not supported")
    return cfg


def config_from_hf(cfg, where="config.json"):
    """GPTConfig from a Hugging Face GPT-2 config dict (n_ctx is the older name of n_positions)."""
    values = {"n_positions": cfg.get("n_positions", cfg.get("n_ctx"))}
    for key in ("vocab_size", "n_layer", "n_head", "n_embd"):
        values[key] = cfg.get(key)
    for key, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool):
            raise PretrainedError(f"{where}: {key} must be an integer, got {v!r}")
    try:
        return GPTConfig(vocab_size=values["vocab_size"], block_size=values["n_positions"],
                         n_layer=values["n_layer"], n_head=values["n_head"],
                         n_embd=values["n_embd"], dropout=0.0, bias=True)
    except ValueError as e:
        raise PretrainedError(f"{where}: {e}") from None


def hf_config(config):
    """The config.json dict that Hugging Face transformers reads as this GPT-2."""
    p = config.dropout
    special = GPT2_VOCAB_SIZE - 1 if config.vocab_size >= GPT2_VOCAB_SIZE else None  # <|endoftext|>
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_ctx": config.block_size,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": p, "embd_pdrop": p, "attn_pdrop": p, "initializer_range": 0.02,
        "scale_attn_weights": True, "tie_word_embeddings": True,
        "bos_token_id": special, "eos_token_id": special,
    }


def _weight_files(directory):
    """The safetensors file(s) holding the weights: one file, or the shards of an index."""
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.lexists(single):                # a FIFO or a folder here is refused when opened
        return [single]
    if os.path.lexists(index):
        try:
            shards = sorted(set(loads_json(read_regular_text(index, "weight index"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise PretrainedError(f"{index} is damaged ({e})") from None
        if not all(isinstance(s, str) and os.path.basename(s) == s for s in shards):
            raise PretrainedError(f"{index} names shard files outside its directory")
        return [os.path.join(directory, s) for s in shards]
    pickled = [n for n in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")
               if os.path.exists(os.path.join(directory, n))]
    hint = (f" (it has {pickled[0]}, which minigpt does not read: re-save it with transformers' "
            f"save_pretrained, which writes safetensors)") if pickled else ""
    raise PretrainedError(f"{directory} has no model.safetensors{hint}")


def params_from_hf(tensors, config, where="model.safetensors", dtype=np.float32):
    """minigpt params from a GPT-2 state dict: prefix dropped, buffers skipped, all checked."""
    params, head = {}, None
    for name, a in tensors.items():
        short = name[len("transformer."):] if name.startswith("transformer.") else name
        if BUFFER.search(short):
            continue
        if short == "lm_head.weight":
            head = a
            continue
        params[short] = a
    shapes = param_shapes(config)
    problem = params_mismatch(params, shapes)
    if problem:
        raise PretrainedError(f"{where} does not match config.json: {problem}")
    params = {name: np.ascontiguousarray(params[name], dtype=dtype) for name in shapes}
    for name, p in params.items():
        if not np.isfinite(p).all():
            raise PretrainedError(f"{where}: {name} holds values that are not finite (NaN or inf)")
    if head is not None and not np.array_equal(head, _wte(tensors)):
        raise PretrainedError(f"{where}: lm_head.weight differs from wte.weight (untied heads "
                              f"are not supported)")
    return params


def _wte(tensors):
    return tensors.get("transformer.wte.weight", tensors.get("wte.weight"))


def model_from_pretrained(directory, dtype=np.float32):
    """A GPT (on the CPU, in dtype) with the weights of a Hugging Face GPT-2 directory."""
    cfg = _read_config(directory)
    config = config_from_hf(cfg, os.path.join(directory, "config.json"))
    tensors = {}
    try:
        headers = {path: read_header(path)[0] for path in _weight_files(directory)}
        seen = {}
        for path, header in headers.items():
            for name in header:
                if name in seen:
                    raise PretrainedError(f"{directory}: {name} is in more than one weight file "
                                          f"({os.path.basename(seen[name])}, {os.path.basename(path)})")
                seen[name] = path
        n_tensors = len(seen)
        if 6 * config.n_layer > n_tensors:       # before naming a million layers' parameters
            raise PretrainedError(f"{directory}: config.json has n_layer {config.n_layer}, but the "
                                  f"weights hold only {n_tensors} tensors")
        for path, header in headers.items():      # the mask buffers are skipped unread
            part, _ = load_file(path, [n for n in header if not BUFFER.search(n)])
            tensors.update(part)
    except SafetensorsError as e:
        raise PretrainedError(str(e)) from None
    params = params_from_hf(tensors, config, os.path.join(directory, "model.safetensors"), dtype)
    return GPT(config, params=params)


def tokenizer_from_directory(directory, vocab_size=GPT2_VOCAB_SIZE):
    """The GPT-2 BPE tokenizer from vocab.json + merges.txt (or encoder.json + vocab.bpe).

    Without either pair, minigpt's shipped copy of GPT-2's files is used if
    the model has GPT-2's vocabulary size.
    """
    from .tokenizer import BPETokenizer
    for vocab, merges in TOKENIZER_FILES:
        v, m = os.path.join(directory, vocab), os.path.join(directory, merges)
        if os.path.lexists(v) and os.path.lexists(m):     # a FIFO is refused when read, not skipped
            try:
                tokenizer = BPETokenizer.from_gpt2(encoder_json=v, vocab_bpe=m)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise PretrainedError(f"cannot read the tokenizer in {directory} ({e})") from None
            break
    else:
        if vocab_size != GPT2_VOCAB_SIZE:
            raise PretrainedError(f"{directory} has no tokenizer files (vocab.json + merges.txt)")
        tokenizer = BPETokenizer.from_gpt2()
    if tokenizer.vocab_size > vocab_size:
        raise PretrainedError(f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but "
                              f"the model embeds only {vocab_size}")
    return tokenizer


def load_pretrained(directory, dtype=np.float32):
    """(model, tokenizer) from a Hugging Face GPT-2 directory; PretrainedError if unusable."""
    model = model_from_pretrained(directory, dtype)
    return model, tokenizer_from_directory(directory, model.config.vocab_size)


def export_safetensors(model, directory):
    """Write model.safetensors (names with `transformer.`) and config.json into directory,
    so Hugging Face transformers (GPT2LMHeadModel.from_pretrained) or minigpt can load it."""
    if not model.config.bias:
        raise PretrainedError("GPT-2 has biases: a model with bias=False cannot be exported")
    os.makedirs(directory, exist_ok=True)
    tensors = {"transformer." + k: v for k, v in model.state_dict().items()}
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    text = json.dumps(hf_config(model.config), indent=2) + "\n"
    atomic_write(os.path.join(directory, "config.json"), lambda f: f.write(text.encode("utf-8")))
