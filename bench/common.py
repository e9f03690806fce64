"""What the PyTorch bench sides share: the command line (a TOML config, `--set`
overrides, threads, device, data directory), the seeds, and the loop that trains one epoch per
line read on stdin (`--worker`) and prints one JSON line per epoch."""

import argparse
import json
import os
import random
import sys
import tomllib

import torch


def setup():
    """The parsed arguments and the config with its overrides; threads and seeds set."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="section.key=value (JSON values)")
    ap.add_argument("--data-dir", default=os.environ.get("RNNLM_DATA_DIR", "../shared/datasets"))
    ap.add_argument("--worker", action="store_true", help="run one epoch per line on stdin")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (as the book's `device`)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # Every tensor and module the scripts make lands on the device, as the book's
    # `try_gpu()` puts them there.
    torch.set_default_device(args.device)
    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)
    for kv in args.set:
        key, value = kv.split("=", 1)
        section, name = key.split(".")
        if value.strip():
            cfg.setdefault(section, {})[name] = json.loads(value)
        else:  # `key=` removes the key, as `cargo xtask --set` does
            cfg.setdefault(section, {}).pop(name, None)
    t = cfg.setdefault("train", {})
    cfg.setdefault("model", {})
    random.seed(t.get("seed", 0))
    torch.manual_seed(t.get("seed", 0))
    return args, cfg


def serve(args, cfg, train_epoch):
    """Runs `train_epoch()` (returning perplexity, tokens/s, seconds) per epoch."""
    for epoch in range(args.epochs or cfg["train"].get("num_epochs", 500)):
        if args.worker and not sys.stdin.readline():
            break
        ppl, speed, seconds = train_epoch()
        print(json.dumps({"epoch": epoch + 1, "perplexity": ppl, "tokens_per_sec": speed, "seconds": seconds}), flush=True)
