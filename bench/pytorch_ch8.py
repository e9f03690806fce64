"""The book's chapter-8 training (d2l 8.5 RNNModelScratch / 8.6 RNNModel, train_epoch_ch8,
grad_clipping, sgd) in plain PyTorch, for side-by-side benchmarks against rnnlm.
No `d2l` package: the few helpers are re-typed from the book.

Reads the same TOML experiment config as `cargo xtask train` (the keys it needs).

  python bench/pytorch_ch8.py --config configs/scratch_sequential.toml --epochs 30 --threads 1
  python bench/pytorch_ch8.py --config ... --worker   # one epoch per line read from stdin

Each epoch prints one JSON line: {"epoch", "perplexity", "tokens_per_sec", "seconds"}.
"""

import collections
import math
import os
import random
import re
import time
import zipfile

from common import serve, setup
import torch
from torch import nn
from torch.nn import functional as F


# --- data (8.2, 8.3) ---
def read_lines(cfg, data_dir):
    name = cfg.get("dataset", "time-machine")
    if name == "time-machine":
        with open(os.path.join(data_dir, "timemachine.txt")) as f:
            return [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in f.readlines()]
    with zipfile.ZipFile(os.path.join(data_dir, "jaychou_lyrics.txt.zip")) as z:
        text = z.open("jaychou_lyrics.txt").read().decode("utf-8")
    return [text.replace("\n", " ").replace("\r", " ")]


class Vocab:
    def __init__(self, tokens):
        counter = collections.Counter(tokens)
        self.token_freqs = sorted(counter.items(), key=lambda x: x[1], reverse=True)
        self.idx_to_token = ["<unk>"] + [t for t, _ in self.token_freqs]
        self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}

    def __len__(self):
        return len(self.idx_to_token)


def load_corpus(cfg, data_dir):
    lines = read_lines(cfg, data_dir)
    tokens = [c for line in lines for c in line]
    max_tokens = cfg.get("max_tokens", 10000)
    if cfg.get("dataset", "time-machine") != "time-machine":
        tokens = tokens[:max_tokens]  # first edition: truncate, then build the vocab
    vocab = Vocab(tokens)
    corpus = [vocab.token_to_idx[t] for t in tokens]
    return corpus[:max_tokens] if max_tokens > 0 else corpus, vocab


def seq_data_iter_random(corpus, batch_size, num_steps):
    corpus = corpus[random.randint(0, num_steps - 1):]
    num_subseqs = (len(corpus) - 1) // num_steps
    initial_indices = list(range(0, num_subseqs * num_steps, num_steps))
    random.shuffle(initial_indices)
    data = lambda pos: corpus[pos: pos + num_steps]
    num_batches = num_subseqs // batch_size
    for i in range(0, batch_size * num_batches, batch_size):
        idx = initial_indices[i: i + batch_size]
        yield torch.tensor([data(j) for j in idx]), torch.tensor([data(j + 1) for j in idx])


def seq_data_iter_sequential(corpus, batch_size, num_steps):
    offset = random.randint(0, num_steps)
    num_tokens = ((len(corpus) - offset - 1) // batch_size) * batch_size
    Xs = torch.tensor(corpus[offset: offset + num_tokens]).reshape(batch_size, -1)
    Ys = torch.tensor(corpus[offset + 1: offset + 1 + num_tokens]).reshape(batch_size, -1)
    for i in range(0, num_steps * (Xs.shape[1] // num_steps), num_steps):
        yield Xs[:, i: i + num_steps], Ys[:, i: i + num_steps]


# --- models (8.5, 8.6) ---
def get_params(vocab_size, num_hiddens):
    normal = lambda shape: torch.randn(size=shape) * 0.01
    params = [normal((vocab_size, num_hiddens)), normal((num_hiddens, num_hiddens)), torch.zeros(num_hiddens),
              normal((num_hiddens, vocab_size)), torch.zeros(vocab_size)]
    for p in params:
        p.requires_grad_(True)
    return params


def rnn(inputs, state, params):
    W_xh, W_hh, b_h, W_hq, b_q = params
    H, = state
    outputs = []
    for X in inputs:
        H = torch.tanh(torch.mm(X, W_xh) + torch.mm(H, W_hh) + b_h)
        outputs.append(torch.mm(H, W_hq) + b_q)
    return torch.cat(outputs, dim=0), (H,)


class RNNModelScratch:
    def __init__(self, vocab_size, num_hiddens):
        self.vocab_size, self.num_hiddens = vocab_size, num_hiddens
        self.params = get_params(vocab_size, num_hiddens)

    def __call__(self, X, state):
        return rnn(F.one_hot(X.T, self.vocab_size).type(torch.float32), state, self.params)

    def begin_state(self, batch_size):
        return (torch.zeros((batch_size, self.num_hiddens)),)

    def parameters(self):
        return self.params


class RNNModel(nn.Module):
    def __init__(self, rnn_layer, vocab_size):
        super().__init__()
        self.rnn, self.vocab_size = rnn_layer, vocab_size
        self.num_hiddens = rnn_layer.hidden_size
        self.linear = nn.Linear(self.num_hiddens, vocab_size)

    def forward(self, inputs, state):
        X = F.one_hot(inputs.T.long(), self.vocab_size).to(torch.float32)
        Y, state = self.rnn(X, state)
        return self.linear(Y.reshape((-1, Y.shape[-1]))), state

    def begin_state(self, batch_size):
        return torch.zeros((self.rnn.num_layers, batch_size, self.num_hiddens))


def grad_clipping(net, theta):
    params = [p for p in net.parameters() if p.requires_grad]
    norm = torch.sqrt(sum(torch.sum((p.grad ** 2)) for p in params))
    if norm > theta:
        for param in params:
            param.grad[:] *= theta / norm


def train_epoch_ch8(net, corpus, cfg, updater):
    t = cfg["train"]
    batch_size, num_steps = t.get("batch_size", 32), t.get("num_steps", 35)
    reset = t.get("state", "carry") == "reset"
    iterator = seq_data_iter_random if t.get("sampler", "sequential") == "random" else seq_data_iter_sequential
    state, loss_sum, n = None, 0.0, 0
    start = time.perf_counter()
    loss = nn.CrossEntropyLoss()
    for X, Y in iterator(corpus, batch_size, num_steps):
        if state is None or reset:
            state = net.begin_state(batch_size)
        elif isinstance(state, tuple):
            state = tuple(s.detach_() for s in state)
        else:
            state.detach_()
        y = Y.T.reshape(-1)
        y_hat, state = net(X, state)
        l = loss(y_hat, y.long()).mean()
        updater.zero_grad()
        l.backward()
        grad_clipping(net, t.get("theta", 1.0))
        updater.step()
        loss_sum += l.item() * y.numel()
        n += y.numel()
    seconds = time.perf_counter() - start
    return math.exp(loss_sum / n), n / seconds, seconds


def main():
    args, cfg = setup()
    t, m = cfg["train"], cfg["model"]
    corpus, vocab = load_corpus(cfg.get("data", {}), args.data_dir)
    H = m.get("num_hiddens", 512)
    if m.get("kind", "scratch") == "scratch":
        net = RNNModelScratch(len(vocab), H)
    else:
        layer = nn.RNN(len(vocab), H, num_layers=m.get("num_layers", 1),
                       nonlinearity=m.get("nonlinearity", "tanh"))
        net = RNNModel(layer, len(vocab))
    lr = t.get("lr", 1.0)
    if t.get("optimizer", "sgd") == "adam":
        updater = torch.optim.Adam(net.parameters(), lr=lr)
    else:
        updater = torch.optim.SGD(net.parameters(), lr=lr)  # d2l.sgd with a mean loss
    serve(args, cfg, lambda: train_epoch_ch8(net, corpus, cfg, updater))


if __name__ == "__main__":
    main()
