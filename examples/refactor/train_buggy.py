"""The refactored MLP with a deliberate bug: the wrong learning-rate schedule.

Identical to ``train_refactored.py`` except one line in the training loop:
from epoch 2 on, the learning rate is multiplied by 10 where a decay (x 0.1)
was meant. ``flordb compare`` reports the first divergence at (epoch 2,
step 1): the loss logged at step 0 of epoch 2 is computed before the first
update that uses the wrong rate, so it still agrees.

    python examples/mlp/train.py --kwargs epochs=3
    python examples/refactor/train_buggy.py --kwargs epochs=3
    flordb compare "script = 'train.py'" "script = 'train_buggy.py'"
"""

import math

import torch

import flordb as flor

seed = flor.arg("seed", 0)
epochs = flor.arg("epochs", 5)
lr = flor.arg("lr", 1e-3)
batch_size = flor.arg("batch_size", 64)
hidden = flor.arg("hidden", 64)

torch.manual_seed(seed)
torch.set_num_threads(1)

# The same synthetic data as the original, drawn in the same order from the same seed.
n, features, classes = 2048, 20, 4
inputs = torch.randn(n, features)
labels = (inputs @ torch.randn(features, classes) + 0.5 * torch.randn(n, classes)).argmax(dim=1)
train_x, train_y = inputs[:1536], labels[:1536]
test_x, test_y = inputs[1536:], labels[1536:]


def linear_init(fan_in: int, fan_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What torch.nn.Linear draws: kaiming_uniform(a=sqrt(5)) weights, uniform bias (same RNG use)."""
    bound = 1.0 / math.sqrt(fan_in)
    weight = torch.empty(fan_out, fan_in).uniform_(-bound, bound)
    bias = torch.empty(fan_out).uniform_(-bound, bound)
    return weight, bias


class HandMLP:
    """Parameters in a dict; forward written out. Checkpointable through state_dict."""

    def __init__(self):
        w1, b1 = linear_init(features, hidden)
        w2, b2 = linear_init(hidden, classes)
        self.params = {k: v.requires_grad_() for k, v in dict(w1=w1, b1=b1, w2=w2, b2=b2).items()}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        h = (x @ p["w1"].T + p["b1"]).clamp_min(0.0)
        return h @ p["w2"].T + p["b2"]

    def state_dict(self):
        return {k: v.detach().clone() for k, v in self.params.items()}

    def load_state_dict(self, state):
        with torch.no_grad():
            for k, v in state.items():
                self.params[k].copy_(v)


class HandAdam:
    """Adam (Kingma & Ba) with bias correction, as torch.optim.Adam computes it."""

    def __init__(self, params: dict, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.t = 0
        self.m = {k: torch.zeros_like(v) for k, v in params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()}

    @torch.no_grad()
    def step(self, grads: dict) -> None:
        b1, b2 = self.betas
        self.t += 1
        correction1 = 1 - b1**self.t
        correction2 = 1 - b2**self.t
        for k, p in self.params.items():
            g = grads[k]
            self.m[k].mul_(b1).add_(g, alpha=1 - b1)
            self.v[k].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (self.v[k].sqrt() / math.sqrt(correction2)).add_(self.eps)
            p.addcdiv_(self.m[k], denom, value=-self.lr / correction1)

    def state_dict(self):
        return {"t": self.t, "m": {k: v.clone() for k, v in self.m.items()},
                "v": {k: v.clone() for k, v in self.v.items()}}

    def load_state_dict(self, state):
        self.t = state["t"]
        for k in self.m:
            self.m[k].copy_(state["m"][k])
            self.v[k].copy_(state["v"][k])


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.logsumexp(dim=1) - logits.gather(1, y[:, None]).squeeze(1)).mean()


def epoch_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(train_x))
    chunks = order.split(batch_size)
    return [(train_x[idx], train_y[idx]) for idx in chunks]


net = HandMLP()
optimizer = HandAdam(net.params, lr=lr)

with flor.checkpointing(model=net, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(epochs)):
        for x, y in flor.loop("step", epoch_batches()):
            loss = cross_entropy(net(x), y)
            grads = dict(zip(net.params, torch.autograd.grad(loss, list(net.params.values()))))
            optimizer.lr = lr * (10.0 if epoch >= 2 else 1.0)  # BUG: meant 0.1, a decay
            optimizer.step(grads)
            flor.log("loss", loss.item())
        with torch.no_grad():
            flor.log("acc", (net(test_x).argmax(dim=1) == test_y).float().mean().item())
