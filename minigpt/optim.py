"""AdamW, gradient clipping and the learning-rate schedule, as loops over parameter names."""
import math

from .backend import array_module, parallel_rows


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), over a dict of arrays.

    Weight decay applies only to parameters with ndim >= 2 (embeddings and
    matrices), not to biases or LayerNorm weights. The state (`m`, `v`,
    `t`) is plain arrays and an int, so checkpoints can save it.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        self.params = params
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0
        self.m = {k: array_module(p).zeros_like(p) for k, p in params.items()}
        self.v = {k: array_module(p).zeros_like(p) for k, p in params.items()}

    def step(self, grads, lr=None):
        """Update every parameter in place from its gradient; lr overrides self.lr."""
        lr = self.lr if lr is None else lr
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        for k, p in self.params.items():
            decay = lr * self.weight_decay if p.ndim >= 2 else 0.0
            parallel_rows(_adamw_update, p, grads[k], self.m[k], self.v[k],
                          b1=b1, b2=b2, step_size=lr / (1.0 - b1 ** self.t),   # bias corrections
                          v_scale=1.0 / math.sqrt(1.0 - b2 ** self.t), eps=self.eps, decay=decay)

    def state_dict(self):
        return {"t": self.t, "m": self.m, "v": self.v}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for k in self.params:
            self.m[k][...] = state["m"][k]
            self.v[k][...] = state["v"][k]


def _adamw_update(p, g, m, v, b1, b2, step_size, v_scale, eps, decay):
    """One block of one parameter, in place: p, m and v after an AdamW step.

    step_size = lr / (1 - b1^t) and v_scale = 1 / sqrt(1 - b2^t) fold in the bias
    corrections; decay = lr * weight_decay (0 for biases and LayerNorm weights).
    """
    xp = array_module(p)
    m *= b1                                        # m = b1 m + (1 - b1) g
    m += (1.0 - b1) * g
    v *= b2                                        # v = b2 v + (1 - b2) g^2
    g2 = g * g
    g2 *= 1.0 - b2
    v += g2
    if decay:
        p *= 1.0 - decay                           # decoupled decay: p -= lr wd p
    denom = xp.sqrt(v, out=g2)        # g2 is scratch from here on
    denom *= v_scale
    denom += eps                                   # sqrt(v_hat) + eps
    update = xp.divide(m, denom, out=denom)
    update *= step_size
    p -= update                                    # p -= lr m_hat / (sqrt(v_hat) + eps)


def grad_norm(grads):
    """The global L2 norm of all gradients, as a 0-d array (no host sync)."""
    total = None
    for g in grads.values():
        s = (g * g).sum()
        total = s if total is None else total + s
    return total ** 0.5


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so their global L2 norm is at most max_norm.

    Returns the norm before clipping (a 0-d array). max_norm <= 0 disables clipping.
    """
    norm = grad_norm(grads)
    if max_norm and max_norm > 0:
        xp = array_module(norm)
        scale = xp.minimum(1.0, max_norm / (norm + 1e-6)).astype(norm.dtype)
        for g in grads.values():
            g *= scale
    return norm


def lr_schedule(it, max_lr, min_lr, warmup_iters, decay_iters):
    """Linear warm-up to max_lr over warmup_iters, then cosine decay to min_lr
    at decay_iters, then min_lr."""
    if it < warmup_iters:
        return max_lr * (it + 1) / warmup_iters
    if it >= decay_iters:
        return min_lr
    progress = (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def relaid_lr(it, from_it, from_lr, min_lr, decay_iters):
    """A cosine re-laid from (from_it, from_lr) down to min_lr at decay_iters, then min_lr;
    from_lr held while decay_iters is not known (math.inf). Never above from_lr: a resumed
    run, or one whose plan dropped, continues from where its learning rate had got to."""
    if it >= decay_iters:
        return min(min_lr, from_lr)
    if math.isinf(decay_iters):
        return from_lr
    progress = max(0, it - from_it) / max(1, decay_iters - from_it)
    return min(from_lr, min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (from_lr - min_lr))
