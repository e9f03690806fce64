"""PyTorch reference fixtures at the book's sizes (B=32, T=35, V=28; H=512 scratch,
H=256 concise), computed with the book's own code (d2l 8.5/8.6) re-typed here so the
`d2l` package is not needed. Never generated from rnnlm's output.

    pip install torch safetensors numpy
    python tools/pytorch/make_book_fixtures.py tests/fixtures

Per model it writes:
  book_<model>.safetensors                 inputs: parameters, X, Y (int64), H0
  book_<model>.expected.safetensors        one step at theta=1 (no clipping fires):
                                           logits, y, loss, H, grad_norm, grad.*
  book_<model>.expected.clip.safetensors   clipped_grad.* at theta=0.01 (clipping fires);
                                           the SGD update itself is covered by ../shared/fixtures
"""

import math
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from safetensors.torch import save_file

B, T, V = 32, 35, 28


# --- the book's code (8.5) ---
def rnn(inputs, state, params):
    W_xh, W_hh, b_h, W_hq, b_q = params
    H, = state
    outputs = []
    for X in inputs:
        H = torch.tanh(torch.mm(X, W_xh) + torch.mm(H, W_hh) + b_h)
        Y = torch.mm(H, W_hq) + b_q
        outputs.append(Y)
    return torch.cat(outputs, dim=0), (H,)


def grad_clipping(params, theta):
    norm = torch.sqrt(sum(torch.sum((p.grad ** 2)) for p in params))
    if norm > theta:
        for param in params:
            param.grad[:] *= theta / norm
    return norm


# --- the book's RNNModel (8.6) ---
class RNNModel(nn.Module):
    def __init__(self, rnn_layer, vocab_size):
        super().__init__()
        self.rnn = rnn_layer
        self.vocab_size = vocab_size
        self.num_hiddens = self.rnn.hidden_size
        self.linear = nn.Linear(self.num_hiddens, self.vocab_size)

    def forward(self, inputs, state):
        X = F.one_hot(inputs.T.long(), self.vocab_size).to(torch.float32)
        Y, state = self.rnn(X, state)
        output = self.linear(Y.reshape((-1, Y.shape[-1])))
        return output, state


def step(kind, params, X, Y, H0, theta, lr=1.0):
    """One forward/backward/clip/SGD step; returns the outputs and named grads."""
    params = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    if kind == "scratch":
        names = ["W_xh", "W_hh", "b_h", "W_hq", "b_q"]
        plist = [params[n] for n in names]
        inputs = F.one_hot(X.T, V).type(torch.float32)
        logits, (H,) = rnn(inputs, (H0,), plist)
    else:
        layer = nn.RNN(V, params["weight_hh_l0"].shape[0])
        net = RNNModel(layer, V)
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(params[name.removeprefix("rnn.")])
        plist = [p for _, p in net.named_parameters()]
        names = [n.removeprefix("rnn.") for n, _ in net.named_parameters()]
        logits, H = net(X, H0.unsqueeze(0))
        H = H.squeeze(0)
    y = Y.T.reshape(-1)
    loss = nn.CrossEntropyLoss()(logits, y).mean()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in zip(names, plist)}
    norm = grad_clipping(plist, theta)
    clipped = {n: p.grad.detach().clone() for n, p in zip(names, plist)}
    with torch.no_grad():
        for p in plist:
            p -= lr * p.grad  # d2l.sgd with batch_size 1: the loss is already a mean
    updated = {n: p.detach().clone() for n, p in zip(names, plist)}
    return logits.detach(), y, loss.detach().reshape(1), H.detach(), norm.detach().reshape(1), grads, clipped, updated


def make(kind, H, out: Path):
    g = torch.Generator().manual_seed(20261125 + H)
    X = torch.randint(0, V, (B, T), generator=g)
    # The next characters, as the sequential sampler gives them.
    Y = torch.roll(X, -1, dims=1)
    Y[:, -1] = torch.randint(0, V, (B,), generator=g)
    H0 = torch.randn(B, H, generator=g) * 0.5
    if kind == "scratch":
        s = 0.01  # the book's get_params scale
        params = {
            "W_xh": torch.randn(V, H, generator=g) * s,
            "W_hh": torch.randn(H, H, generator=g) * s,
            "b_h": torch.randn(H, generator=g) * s,
            "W_hq": torch.randn(H, V, generator=g) * s,
            "b_q": torch.randn(V, generator=g) * s,
        }
    else:
        k = 1 / math.sqrt(H)
        u = lambda *shape: (torch.rand(*shape, generator=g) * 2 - 1) * k
        params = {
            "weight_ih_l0": u(H, V),
            "weight_hh_l0": u(H, H),
            "bias_ih_l0": u(H),
            "bias_hh_l0": u(H),
            "linear.weight": u(V, H),
            "linear.bias": u(V),
        }
    meta = {"model": kind, "B": str(B), "T": str(T), "V": str(V), "H": str(H), "torch": torch.__version__}
    save_file({**params, "X": X, "Y": Y, "H0": H0}, out / f"book_{kind}.safetensors", metadata=meta)

    logits, y, loss, Hn, norm, grads, _, _ = step(kind, params, X, Y, H0, theta=1.0)
    assert norm.item() < 1.0, f"{kind}: clipping fired at theta=1 (norm {norm.item()})"
    expected = {"logits": logits, "y": y, "loss": loss, "H": Hn, "grad_norm": norm}
    expected.update({f"grad.{n}": t for n, t in grads.items()})
    save_file(expected, out / f"book_{kind}.expected.safetensors", metadata={**meta, "theta": "1.0", "lr": "1.0"})

    _, _, _, _, norm_c, _, clipped, _ = step(kind, params, X, Y, H0, theta=0.01)
    assert norm_c.item() > 0.01
    clip = {f"clipped_grad.{n}": t for n, t in clipped.items()}
    save_file(clip, out / f"book_{kind}.expected.clip.safetensors", metadata={**meta, "theta": "0.01", "lr": "1.0"})
    print(f"{kind}: H={H} loss {loss.item():.6f} grad_norm {norm.item():.6f}")


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    make("scratch", 512, out)
    make("concise", 256, out)
