#!/usr/bin/env bash
# Issue 18: how much a prompt can move the embedded model on a `choice` task at all. For each
# task: the seed on 50 dev and 100 test examples and the human prompt on test, then, from the
# label probabilities the evaluator records per example,
#   - the AUC of the first label's probability on test (binary tasks: 0.5 = no signal to find),
#   - the share of the most frequent answer,
#   - contextual calibration (a per-label log-offset, the log of the label's mean probability
#     over the 50 dev inputs, subtracted before the most likely label is picked; fitted without
#     the dev labels) on dev and on test, compared with the human prompt by a paired bootstrap.
#
#   [MODEL=local:smollm2-135m-instruct] scripts/bench-signal.sh TASK...
#   (release build; no cache, no library; MODEL: the execution model, default the task's)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p metaprompt-cli >&2
bin=target/release/metaprompt
out=${OUT:-$(mktemp -d)}
echo "| task | seed AUC (test) | top answer's share | dev: seed / calibrated | test: human / seed / calibrated | calibrated − human [95% CI], p |"
echo "|---|---|---|---|---|---|"
for t in "$@"; do
  human="examples/$t/prompts/human.toml"
  seed="examples/$t/prompts/$(sed -n 's/.*same demonstrations as \([a-z_]*\.toml\).*/\1/p' "$human")"
  common=(--no-cache --no-library eval "examples/$t/task.toml" --json ${MODEL:+--model "$MODEL"})
  "$bin" "${common[@]}" --prompt "$seed" --split dev --limit 50 --out "$out/$t.seed.dev.jsonl" >/dev/null
  "$bin" "${common[@]}" --prompt "$seed" --split test --limit 100 --out "$out/$t.seed.test.jsonl" >/dev/null
  "$bin" "${common[@]}" --prompt "$human" --split test --limit 100 --out "$out/$t.human.test.jsonl" >/dev/null
  python3 - "$t" "$out" <<'PY'
import json, math, random, sys
from collections import Counter
task, out = sys.argv[1:]
load = lambda k: [json.loads(l) for l in open(f"{out}/{task}.{k}.jsonl")]
dev, test, human = load("seed.dev"), load("seed.test"), load("human.test")
labels = list(dev[0]["label_probs"])
def pick(r, bias):
    p = r["label_probs"]
    return max(labels, key=lambda l: math.log(max(p[l], 1e-12)) - bias.get(l, 0.0))
def right(rows, bias):
    return [1.0 if pick(r, bias).strip() == str(r["expected"]).strip() else 0.0 for r in rows]
bias = {l: math.log(sum(r["label_probs"][l] for r in dev) / len(dev)) for l in labels}
if len(labels) == 2:
    a = labels[0]
    pos = [r["label_probs"][a] for r in test if str(r["expected"]).strip() == a]
    neg = [r["label_probs"][a] for r in test if str(r["expected"]).strip() != a]
    auc = f"{sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg)):.3f}"
else:
    auc = f"({len(labels)} labels)"
top = Counter(r["output"] for r in test).most_common(1)[0]
mean = lambda xs: sum(xs) / len(xs)
cal, hum = right(test, bias), [r["score"] or 0.0 for r in human]
d = [x - y for x, y in zip(cal, hum)]
rnd, n = random.Random(7), 4000
boot = sorted(mean([d[rnd.randrange(len(d))] for _ in d]) for _ in range(n))
p = min(1.0, 2 * min(sum(b <= 0 for b in boot), sum(b >= 0 for b in boot)) / n)
print(f"| {task} | {auc} | {top[1] / len(test):.2f} ({top[0]}) | {mean(right(dev, {})):.3f} / {mean(right(dev, bias)):.3f} "
      f"| {mean(hum):.3f} / {mean(right(test, {})):.3f} / {mean(cal):.3f} "
      f"| {mean(d):+.3f} [{boot[int(.025 * n)]:+.3f}, {boot[int(.975 * n)]:+.3f}], p = {p:.4f} |")
PY
done
