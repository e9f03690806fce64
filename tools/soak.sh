#!/usr/bin/env bash
# Kill -9 soak: for each model kind, train once uninterrupted, then train the same run
# while killing it with SIGKILL at random moments and resuming it, CYCLES times; the
# interrupted run's metrics (every column but the timings) must equal the uninterrupted
# run's. Prints the cycles run and the kills that landed.
#
#   cargo build --release -p xtask && CYCLES=20 tools/soak.sh
#
# RNNLM (the binary, default target/release/rnnlm), CYCLES (kills per kind, default 10),
# SEED (of the kill moments, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${RNNLM:-target/release/rnnlm}
cycles=${CYCLES:-10}
RANDOM=${SEED:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A tied two-layer GRU on words with an embedding and dropout.
cat >"$work/gru_tied.toml" <<'EOF'
[data]
dataset = "time-machine"
token = "word"
max_tokens = 8000
valid_fraction = 0.1
[model]
kind = "lm"
cell = "gru"
num_hiddens = 32
embedding_dim = 32
num_layers = 2
tied = true
dropout = 0.2
[train]
batch_size = 16
num_steps = 20
optimizer = "adam"
lr = 0.003
schedule = "plateau"
EOF

# An untied two-layer LSTM on words under SGD (word_language_model's): the embedding's
# gradient by rows and the decoder's transposed go into the host SGD's update.
sed -e 's/cell = "gru"/cell = "lstm"/' -e 's/tied = true/tied = false/' \
  -e 's/optimizer = "adam"/optimizer = "sgd"/' -e 's/lr = 0.003/lr = 2.0/' \
  "$work/gru_tied.toml" >"$work/lstm_sgd.toml"

# name | config | overrides: a few seconds each on one core.
kinds=(
  "scratch|configs/scratch_sequential.toml|--epochs 40 --set model.num_hiddens=64"
  "concise-gru|configs/concise.toml|--epochs 30 --set model.cell=\"gru\" --set model.num_hiddens=64 --set train.engine=\"autodiff\""
  "lm-lstm-dropout|configs/shakespeare_char.toml|--epochs 12 --set data.max_tokens=20000 --set model.num_hiddens=32 --set model.dropout=0.3 --set train.batch_size=16 --set train.num_steps=20 --set train.eval_every=5 --set train.lr_decay_after=3 --set train.patience=0"
  "lm-gru-tied-words|$work/gru_tied.toml|--epochs 15"
  "lm-lstm-sgd-words|$work/lstm_sgd.toml|--epochs 15"
)

metrics() { cut -d, -f1-5 "$1/metrics.csv"; }

total_kills=0
for kind in "${kinds[@]}"; do
  IFS='|' read -r name config overrides <<<"$kind"
  # shellcheck disable=SC2086 # the overrides are words
  train() { "$bin" train --config "$config" $overrides --quiet "$@" >>"$work/$name.log" 2>&1; }
  start=$(date +%s%N)
  train --out "$work/$name-ref" || { cat "$work/$name.log" >&2; exit 1; }
  wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  run="$work/$name"
  kills=0
  for ((i = 0; i < cycles; i++)); do
    # A run killed before it wrote its config has nothing to resume: `--out` starts it
    # again in the same directory.
    if [[ -f $run/config.toml ]]; then args=(--resume "$run"); else args=(--out "$run"); fi
    # Not through `train`: $! must be rnnlm's own pid, not a subshell's.
    # shellcheck disable=SC2086
    "$bin" train --config "$config" $overrides --quiet "${args[@]}" >>"$work/$name.log" 2>&1 &
    pid=$!
    # Uniform in [0, 2W/cycles]: the kills spread over the whole run.
    sleep "$(awk -v r=$RANDOM -v w="$wall_ms" -v c="$cycles" 'BEGIN { printf "%.3f", (r / 32768) * 2 * w / c / 1000 }')"
    if kill -9 "$pid" 2>/dev/null; then kills=$((kills + 1)); fi
    wait "$pid" 2>/dev/null || true
    [[ -f $run/summary.json ]] && break
  done
  if [[ ! -f $run/summary.json ]]; then
    if [[ -f $run/config.toml ]]; then args=(--resume "$run"); else args=(--out "$run"); fi
    train "${args[@]}" || { tail -5 "$work/$name.log" >&2; exit 1; }
  fi
  if ! diff <(metrics "$work/$name-ref") <(metrics "$run") >/dev/null; then
    echo "soak: $name: the interrupted run's metrics differ from the uninterrupted run's" >&2
    diff <(metrics "$work/$name-ref") <(metrics "$run") >&2 || true
    exit 1
  fi
  echo "soak: $name: $kills kills landed in $cycles cycles (run ${wall_ms} ms uninterrupted); metrics equal"
  total_kills=$((total_kills + kills))
done
echo "soak: ${#kinds[@]} model kinds, $total_kills kill -9s, every resumed run equal to its uninterrupted one"
