"""rnnlm's `kind = "lm"` training in plain PyTorch, for side-by-side benchmarks: PyTorch's
word_language_model `RNNModel` (nn.Embedding or one-hot input, nn.LSTM / nn.GRU / nn.RNN,
dropout on the embedding output, between layers and on the last output, nn.Linear decoder,
optionally tied), the config's optimizer and clipping, the same minibatch shapes.

Reads the same TOML experiment config as `cargo xtask train` (the keys it needs; the
corpora `tinyshakespeare` and `ptb` from RNNLM_DATA_DIR).

  python bench/pytorch_lm.py --config configs/shakespeare_char.toml --epochs 3 --threads 1
  python bench/pytorch_lm.py --config ... --worker   # one epoch per line read from stdin

Each epoch prints one JSON line: {"epoch", "perplexity", "tokens_per_sec", "seconds"}.
"""

import math
import os
import random
import time
import zipfile

from common import serve, setup
import torch
from torch import nn
from torch.nn import functional as F


def load_tokens(d, data_dir):
    """The training split's tokens as indices, and the vocabulary size (with <unk>)."""
    name, word = d.get("dataset", "time-machine"), d.get("token", "char") == "word"
    if name == "ptb":
        with zipfile.ZipFile(os.path.join(data_dir, "ptb.zip")) as z:
            text = z.open("ptb/ptb.train.txt").read().decode("utf-8")
        tokens = [w for line in text.split("\n") for w in line.split() + ["<eos>"]]
    else:
        file = {"tinyshakespeare": "tinyshakespeare.txt", "time-machine": "timemachine.txt"}[name]
        with open(os.path.join(data_dir, file), encoding="utf-8") as f:
            text = f.read()
        tokens = text.split() if word else list(text)
        head = 1.0 - d.get("valid_fraction", 0.0) - d.get("test_fraction", 0.0)
        tokens = tokens[: int(len(tokens) * head)]
    max_tokens = d.get("max_tokens", 10000)
    tokens = tokens[:max_tokens] if max_tokens > 0 else tokens
    vocab = {t: i + 1 for i, t in enumerate(sorted(set(tokens)))}
    return [vocab[t] for t in tokens], len(vocab) + 1


class RNNModel(nn.Module):
    def __init__(self, m, vocab_size):
        super().__init__()
        cell, H, L, E = m.get("cell", "rnn_tanh"), m["num_hiddens"], m.get("num_layers", 1), m.get("embedding_dim", 0)
        p = m.get("dropout", 0.0)
        self.vocab_size, self.E, self.drop = vocab_size, E, nn.Dropout(p)
        self.encoder = nn.Embedding(vocab_size, E) if E > 0 else None
        inp = E if E > 0 else vocab_size
        if cell == "lstm":
            self.rnn = nn.LSTM(inp, H, L, dropout=p)
        elif cell == "gru":
            self.rnn = nn.GRU(inp, H, L, dropout=p)
        else:
            self.rnn = nn.RNN(inp, H, L, nonlinearity=cell.removeprefix("rnn_"), dropout=p)
        self.decoder = nn.Linear(H, vocab_size)
        if m.get("tied", False):
            self.decoder.weight = self.encoder.weight
        self.lstm, self.H, self.L = cell == "lstm", H, L

    def forward(self, X, state):  # X: [T, B]
        x = self.encoder(X) if self.E > 0 else F.one_hot(X, self.vocab_size).float()
        out, state = self.rnn(self.drop(x), state)
        return self.decoder(self.drop(out)).reshape(-1, self.vocab_size), state

    def begin_state(self, B):
        h = torch.zeros(self.L, B, self.H)
        return (h, torch.zeros_like(h)) if self.lstm else h


def batches(corpus, B, T, sampler):
    """Minibatches `[T, B]` as rnnlm samples them (sequential, batchify or random)."""
    offset = 0 if sampler == "batchify" else random.randint(0, T - 1)
    if sampler != "random":
        n = ((len(corpus) - offset - 1) // B) * B
        xs = torch.tensor(corpus[offset: offset + n]).reshape(B, -1)
        ys = torch.tensor(corpus[offset + 1: offset + 1 + n]).reshape(B, -1)
        for i in range(0, T * (xs.shape[1] // T), T):
            yield xs[:, i: i + T].T, ys[:, i: i + T].T
        return
    starts = list(range(offset, len(corpus) - T - 1, T))
    random.shuffle(starts)
    for i in range(0, len(starts) - B + 1, B):
        idx = starts[i: i + B]
        yield (torch.tensor([corpus[j: j + T] for j in idx]).T,
               torch.tensor([corpus[j + 1: j + 1 + T] for j in idx]).T)


def optimizer(t, params):
    lr, wd, name = t.get("lr", 1.0), t.get("weight_decay", 0.0), t.get("optimizer", "sgd")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd or 0.01)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=t.get("alpha", 0.99), eps=1e-8, weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=t.get("momentum", 0.0), weight_decay=wd)


def train_epoch(net, corpus, t, opt):
    B, T = t.get("batch_size", 32), t.get("num_steps", 35)
    carry = t.get("state", "carry") == "carry"
    theta, clip_value = t.get("theta", 1.0), t.get("clip_value", 0.0)
    net.train()
    state, loss_sum, n = None, 0.0, 0
    start = time.perf_counter()
    for X, Y in batches(corpus, B, T, t.get("sampler", "sequential")):
        if state is None or not carry:
            state = net.begin_state(B)
        else:
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        logits, state = net(X, state)
        loss = F.cross_entropy(logits, Y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        if clip_value > 0:
            torch.nn.utils.clip_grad_value_(net.parameters(), clip_value)
        if theta > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), theta)
        opt.step()
        loss_sum += loss.item() * Y.numel()
        n += Y.numel()
    seconds = time.perf_counter() - start
    return math.exp(loss_sum / n), n / seconds, seconds


def main():
    args, cfg = setup()
    t = cfg["train"]
    corpus, vocab_size = load_tokens(cfg.get("data", {}), args.data_dir)
    net = RNNModel(cfg["model"], vocab_size)
    opt = optimizer(t, net.parameters())
    serve(args, cfg, lambda: train_epoch(net, corpus, t, opt))


if __name__ == "__main__":
    main()
