"""Weights between rnnlm and PyTorch, both ways, checked on logits.

Export: an rnnlm run's `cargo xtask export` file loads into PyTorch's nn.Embedding +
nn.LSTM/GRU/RNN + nn.Linear (word_language_model's RNNModel layout) with
load_state_dict(strict=True); PyTorch's logits on a batch equal rnnlm's (computed by
`cargo xtask parity` on the same weights and batch) at float32 tolerance.

Import: a model made in PyTorch, saved as a state_dict with its metadata, becomes an rnnlm
run with `cargo xtask import`; exporting that run gives back the same tensors, and rnnlm's
logits equal PyTorch's.

    python3 tools/pytorch/roundtrip.py --xtask target/release/rnnlm --run runs/NAME --work DIR
"""

import argparse
import json
import os
import subprocess

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

ATOL, RTOL = 1e-5, 1e-4


class RNNModel(torch.nn.Module):
    """word_language_model's RNNModel (dropout off)."""

    def __init__(self, cell, V, E, H, L, tied):
        super().__init__()
        self.one_hot = E == 0
        if not self.one_hot:
            self.encoder = torch.nn.Embedding(V, E)
        rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(cell)
        if rnn is not None:
            self.rnn = rnn(V if self.one_hot else E, H, L)
        else:
            nonlinearity = {"rnn_tanh": "tanh", "rnn_relu": "relu"}[cell]
            self.rnn = torch.nn.RNN(V if self.one_hot else E, H, L, nonlinearity=nonlinearity)
        self.decoder = torch.nn.Linear(H, V)
        if tied:
            self.decoder.weight = self.encoder.weight
        self.cell, self.V, self.tied = cell, V, tied

    def forward(self, X, state):
        x = torch.nn.functional.one_hot(X.T, self.V).to(self.decoder.weight.dtype) if self.one_hot else self.encoder(X.T)
        out, state = self.rnn(x, state)
        return self.decoder(out).reshape(-1, self.V), state

    def state_dict_untied(self):
        sd = self.state_dict()
        if self.tied:
            del sd["decoder.weight"]
        return sd


def metadata(path):
    with safe_open(path, "pt") as f:
        return f.metadata() or {}


def model_of(meta):
    return RNNModel(meta["cell"], int(meta["V"]), int(meta["E"]), int(meta["H"]), int(meta["L"]), meta["tied"] == "true")


def batch(model, meta, seed):
    g = torch.Generator().manual_seed(seed)
    B, T, L, H = 3, 7, int(meta["L"]), int(meta["H"])
    X = torch.randint(0, model.V, (B, T), generator=g)
    Y = torch.randint(0, model.V, (B, T), generator=g)
    H0 = torch.randn(L, B, H, generator=g) * 0.5
    C0 = torch.randn(L, B, H, generator=g) * 0.5
    return X, Y, H0, C0


def rnnlm_logits(args, model, meta, X, Y, H0, C0, name):
    """rnnlm's logits for the model's weights on (X, H0, C0), via `cargo xtask parity`."""
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict_untied().items()}
    tensors.update({"X": X, "Y": Y, "H0": H0})
    if meta["cell"] == "lstm":
        tensors["C0"] = C0
    fixture = os.path.join(args.work, f"{name}.fixture.safetensors")
    out = os.path.join(args.work, f"{name}.out.safetensors")
    keys = ["cell", "V", "H", "L", "E", "input", "tied"]
    save_file(tensors, fixture, metadata={k: meta[k] for k in keys} | {"theta": "1.0", "lr": "0.0"})
    subprocess.run([args.xtask, "parity", "--input", fixture, "--output", out, "--engine", "autodiff"], check=True, stdout=subprocess.DEVNULL)
    return load_file(out)["logits"]


def close(name, a, b):
    if not torch.allclose(a, b, atol=ATOL, rtol=RTOL):
        raise SystemExit(f"{name}: max difference {(a - b).abs().max().item()}")
    print(f"{name}: equal (max difference {(a - b).abs().max().item():.2e})")


def export_direction(args):
    exported = os.path.join(args.work, "export.safetensors")
    subprocess.run([args.xtask, "export", "--checkpoint", args.run, "--out", exported], check=True, stdout=subprocess.DEVNULL)
    meta = metadata(exported)
    model = model_of(meta)
    state = load_file(exported)
    if meta["tied"] == "true":
        state["decoder.weight"] = state["encoder.weight"]
    model.load_state_dict(state, strict=True)
    X, Y, H0, C0 = batch(model, meta, 1)
    with torch.no_grad():
        logits, _ = model(X, (H0, C0) if meta["cell"] == "lstm" else H0)
    close("export: PyTorch logits vs rnnlm's", logits, rnnlm_logits(args, model, meta, X, Y, H0, C0, "export"))


def import_direction(args):
    torch.manual_seed(0)
    for cell, E, L, tied in [("lstm", 16, 2, True), ("gru", 0, 1, False), ("rnn_tanh", 8, 2, False)]:
        H = 16 if tied else 12
        meta = {"cell": cell, "V": "20", "E": str(E), "H": str(H), "L": str(L), "tied": str(tied).lower(), "input": "embedding" if E else "one_hot"}
        model = model_of(meta)
        made = os.path.join(args.work, f"torch-{cell}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict_untied().items()}, made, metadata=meta)
        vocab = os.path.join(args.work, "vocab.txt")
        with open(vocab, "w") as f:
            f.write("\n".join(["<unk>"] + [f"w{i}" for i in range(1, 20)]) + "\n")
        run = os.path.join(args.work, f"imported-{cell}")
        subprocess.run([args.xtask, "import", "--safetensors", made, "--vocab", vocab, "--out", run, "--force"], check=True, stdout=subprocess.DEVNULL)
        back = os.path.join(args.work, f"back-{cell}.safetensors")
        subprocess.run([args.xtask, "export", "--checkpoint", run, "--out", back], check=True, stdout=subprocess.DEVNULL)
        original, returned = load_file(made), load_file(back)
        if set(original) != set(returned) or any(not torch.equal(original[k], returned[k]) for k in original):
            raise SystemExit(f"import {cell}: the exported tensors differ from PyTorch's")
        X, Y, H0, C0 = batch(model, meta, 2)
        with torch.no_grad():
            logits, _ = model(X, (H0, C0) if cell == "lstm" else H0)
        close(f"import {cell}: rnnlm logits vs PyTorch's", rnnlm_logits(args, model, meta, X, Y, H0, C0, f"import-{cell}"), logits)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--xtask", required=True)
    p.add_argument("--run", required=True, help="an lm run directory to export")
    p.add_argument("--work", required=True)
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    export_direction(args)
    import_direction(args)
    print(json.dumps({"roundtrip": "ok"}))


if __name__ == "__main__":
    main()
