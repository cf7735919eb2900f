#!/usr/bin/env python3
"""DSPy's optimizers (MIPROv2, GEPA) on metaprompt's tasks, counting metric and model calls.

Run by scripts/dspy-compare.sh (which makes the venvs and finds the models); see its header.
One task per process: two llama-server processes (the execution model for the DSPy program,
the meta model as MIPROv2's prompt_model / GEPA's reflection_lm) on free loopback ports, the
unoptimized program scored on the test examples once, then each optimizer compiled from the
same start and scored on the same test examples. One JSON line per optimizer in
OUT/dspy-<task>-<optimizer>.json, one markdown row per optimizer on stdout.

Splits are metaprompt's: explicit train/dev/test files, or one file split by ratios after the
same seeded shuffle (rand 0.9's StdRng::seed_from_u64 + SliceRandom::shuffle, ported below and
checked against the Rust crate), then the first DEV_LIMIT dev and TEST_LIMIT test examples.
"""

import argparse
import contextlib
import csv
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import traceback
import urllib.request
from pathlib import Path

# --- metaprompt's seeded split (crates/eval/src/dataset.rs) ------------------------------------

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF


def _rotl(x, n):
    return ((x << n) | (x >> (32 - n))) & M32


class StdRng:
    """rand 0.9's StdRng (ChaCha12, 64-bit block counter, stream 0) from seed_from_u64."""

    def __init__(self, state):
        key = []
        for _ in range(8):  # rand_core's seed_from_u64: PCG32 fills the 32-byte seed
            state = (state * 6364136223846793005 + 11634580027462260723) & M64
            xs = (((state >> 18) ^ state) >> 27) & M32
            rot = state >> 59
            key.append(((xs >> rot) | (xs << ((32 - rot) & 31))) & M32)
        self.key, self.counter, self.buf = key, 0, []

    def _block(self):
        c = self.counter
        s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *self.key, c & M32, c >> 32, 0, 0]
        x = list(s)

        def qr(a, b, d_, e):
            x[a] = (x[a] + x[b]) & M32
            x[e] = _rotl(x[e] ^ x[a], 16)
            x[d_] = (x[d_] + x[e]) & M32
            x[b] = _rotl(x[b] ^ x[d_], 12)
            x[a] = (x[a] + x[b]) & M32
            x[e] = _rotl(x[e] ^ x[a], 8)
            x[d_] = (x[d_] + x[e]) & M32
            x[b] = _rotl(x[b] ^ x[d_], 7)

        for _ in range(6):  # 12 rounds
            qr(0, 4, 8, 12), qr(1, 5, 9, 13), qr(2, 6, 10, 14), qr(3, 7, 11, 15)
            qr(0, 5, 10, 15), qr(1, 6, 11, 12), qr(2, 7, 8, 13), qr(3, 4, 9, 14)
        self.counter += 1
        return [(a + b) & M32 for a, b in zip(x, s)]

    def next_u32(self):
        if not self.buf:
            self.buf = self._block()
        return self.buf.pop(0)

    def below(self, n):
        """random_range(..n) for u32: Canon's method as rand 0.9 does it (feature `unbiased` off)."""
        p = self.next_u32() * n
        result, lo = p >> 32, p & M32
        if lo > ((-n) & M32):
            hi2 = (self.next_u32() * n) >> 32
            result += 1 if lo + hi2 > M32 else 0
        return result


def rust_shuffle(items, seed):
    """SliceRandom::shuffle (rand 0.9, via IncreasingUniform) with StdRng::seed_from_u64(seed)."""
    items = list(items)
    if len(items) <= 1:
        return items
    rng = StdRng(seed)
    n, chunk, remaining = 0, 0, 1
    for i in range(len(items)):
        nn = n + 1
        if remaining == 0:
            bound, cur = nn, nn + 1
            while bound * cur <= M32:
                bound *= cur
                cur += 1
            chunk = rng.below(bound)
            remaining = cur - nn
        remaining -= 1
        if remaining == 0:
            idx = chunk
        else:
            idx, chunk = chunk % nn, chunk // nn
        n = nn
        items[i], items[idx] = items[idx], items[i]
    return items


def load_rows(path):
    text = path.read_text(encoding="utf-8").lstrip("\ufeff")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if suffix == ".json":
        value = json.loads(text)
        return value["examples"] if isinstance(value, dict) else value
    if suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    raise SystemExit(f"{path}: unknown dataset format")


def load_task(task_dir):
    cfg = tomllib.loads((task_dir / "task.toml").read_text())
    data = cfg["data"]
    fields = data.get("fields", {})

    def rows(path):
        out = []
        for row in load_rows(task_dir / path):
            for var, column in fields.items():
                row[var] = row.pop(column)
            out.append(row)
        return out

    splits = {}
    for name in ("train", "dev", "test"):
        if name in data:
            splits[name] = rows(data[name])
    if "file" in data and "split" in data:
        ratios = sorted(data["split"].items())  # a BTreeMap in the Rust task: by name
        all_rows = rust_shuffle(rows(data["file"]), int(data.get("seed", 0)))
        whole = abs(sum(r for _, r in ratios) - 1.0) <= 1e-9
        start, acc, n = 0, 0.0, len(all_rows)
        for i, (name, r) in enumerate(ratios):
            acc += min(max(r, 0.0), 1.0)
            end = n if whole and i + 1 == len(ratios) else min(math.floor(acc * n + 0.5), n)
            splits.setdefault(name, all_rows[start:max(end, start)])
            start = max(end, start)
    metric = cfg["metrics"][0]
    return cfg, splits, metric


# --- metrics, as metaprompt's choice / numeric metrics read an answer --------------------------


def answers(expected):
    return [str(a) for a in expected] if isinstance(expected, list) else [str(expected)]


def parse_choice(labels, output):
    """The label that appears first in the text as a whole word, any case (metric/text.rs)."""
    lower, best = str(output).lower(), None
    for label in labels:
        m = re.search(r"(^|\W)" + re.escape(label.strip().lower()) + r"($|\W)", lower)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), label)
    return best and best[1]


def final_number(text):
    text = str(text)
    tail = text.rsplit("####", 1)[1] if "####" in text else text
    source = text if not tail.strip() else tail
    nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", source)
    if not nums:
        return None
    pick = nums[0] if source == tail and "####" in text else nums[-1]
    try:
        return float(pick.replace(",", ""))
    except ValueError:
        return None


def make_scorer(metric_cfg):
    """(expected, output) -> (score, feedback)."""
    kind = metric_cfg["type"]
    if kind == "choice":
        labels = metric_cfg["labels"]

        def score(expected, output):
            exp = answers(expected)
            label = parse_choice(labels, output)
            if label is None:
                return 0.0, f"no answer among {labels} in {str(output).strip()!r}; expected {' or '.join(exp)}"
            ok = any(label.strip().lower() == a.strip().lower() for a in exp)
            return float(ok), f"answered {label!r}, expected {' or '.join(exp)}"

        return score
    if kind == "numeric":
        tol = float(metric_cfg.get("tolerance", 1e-6))

        def score(expected, output):
            got = final_number(output)
            exp = [final_number(a) for a in answers(expected)]
            ok = got is not None and any(e is not None and abs(got - e) <= tol for e in exp)
            return float(ok), f"answered {got}, expected {exp[0]}"

        return score
    raise SystemExit(f"metric type {kind!r} is not supported by this harness (choice, numeric)")


# --- llama-server ------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lib_dir(server_bin, into):
    """The wheel keeps its library links in _symlinks.json (wheels cannot hold symlinks)."""
    bin_dir = Path(server_bin).resolve().parent
    into.mkdir(parents=True, exist_ok=True)
    links_file = bin_dir / "_symlinks.json"
    links = json.loads(links_file.read_text()) if links_file.exists() else {}
    for link, target in links.items():
        while target in links:
            target = links[target]
        p = into / link
        if p.is_symlink() or p.exists():
            p.unlink()
        p.symlink_to(bin_dir / target)
    return into


class Server:
    def __init__(self, name, server_bin, model, libs, threads, ctx, parallel, log_dir):
        self.name, self.port = name, free_port()
        env = dict(os.environ, LD_LIBRARY_PATH=f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}")
        cmd = [str(server_bin), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
               "-t", str(threads), "-c", str(ctx * parallel), "-np", str(parallel),
               "--metrics", "--no-webui"]
        self.log = open(log_dir / f"llama-server-{name}.log", "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=lambda: os.nice(19))
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server {self.name} exited ({self.proc.returncode}); see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(1)
        raise RuntimeError(f"llama-server {self.name} not healthy after {timeout} s")

    def metrics(self):
        """Token counters from /metrics (prompt tokens, cached prompt tokens, generated tokens)."""
        out = {}
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("llamacpp:") and " " in line:
                        k, v = line.split(" ", 1)
                        out[k[len("llamacpp:"):]] = float(v)
        except Exception:
            pass
        return {k: int(out.get(k, 0)) for k in ("prompt_tokens_total", "prompt_tokens_cached_total",
                                                  "tokens_predicted_total")}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- the run -----------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task")
    ap.add_argument("--examples", default="examples")
    ap.add_argument("--optimizers", default="mipro gepa")
    ap.add_argument("--dev-limit", type=int, default=50)
    ap.add_argument("--test-limit", type=int, default=100)
    ap.add_argument("--out", required=True)
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--libs", required=True, help="folder for the server's library links")
    ap.add_argument("--exec-gguf", required=True)
    ap.add_argument("--meta-gguf", required=True)
    ap.add_argument("--threads", type=int, default=2, help="llama-server -t, each server")
    ap.add_argument("--ctx", type=int, default=4096, help="context per slot")
    ap.add_argument("--parallel", type=int, default=4, help="slots per server = DSPy threads")
    ap.add_argument("--exec-max-tokens", type=int, default=64)
    ap.add_argument("--meta-max-tokens", type=int, default=1024)
    ap.add_argument("--meta-temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=9)
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task_dir = Path(args.examples) / args.task
    cfg, splits, metric_cfg = load_task(task_dir)
    inputs, output = cfg["inputs"], cfg["output"]
    scorer = make_scorer(metric_cfg)
    for s in ("train", "dev", "test"):
        if s not in splits:
            raise SystemExit(f"{task_dir}: no {s} split")

    servers = []

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        libs = lib_dir(args.llama_server, Path(args.libs))
        exec_srv = Server("exec", args.llama_server, args.exec_gguf, libs, args.threads, args.ctx,
                          args.parallel, out)
        servers.append(exec_srv)
        meta_srv = Server("meta", args.llama_server, args.meta_gguf, libs, args.threads, args.ctx,
                          args.parallel, out)
        servers.append(meta_srv)
        exec_srv.wait()
        meta_srv.wait()
        # DSPy prints progress on stdout: keep stdout for the table rows.
        rows = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            run_all(args, out, cfg, splits, inputs, output, metric_cfg, scorer, exec_srv, meta_srv, rows)
    finally:
        for s in servers:
            s.stop()


def run_all(args, out, cfg, splits, inputs, output, metric_cfg, scorer, exec_srv, meta_srv, rows):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network look-up
    import dspy
    from dspy.utils.callback import BaseCallback

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)

    calls = {"exec": 0, "meta": 0}
    lock = threading.Lock()

    class CountLM(BaseCallback):
        """Every LM call (copies included: callbacks set in dspy.configure see them all)."""

        def on_lm_start(self, call_id, instance, inputs):
            name = "meta" if "meta" in str(getattr(instance, "model", "")) else "exec"
            with lock:
                calls[name] += 1

    exec_lm = dspy.LM("openai/exec", api_base=exec_srv.url + "/v1", api_key="x", temperature=0.0,
                      max_tokens=args.exec_max_tokens, cache=False)
    meta_lm = dspy.LM("openai/meta", api_base=meta_srv.url + "/v1", api_key="x",
                      temperature=args.meta_temperature, max_tokens=args.meta_max_tokens, cache=False)
    dspy.configure(lm=exec_lm, adapter=dspy.ChatAdapter(), callbacks=[CountLM()])

    from typing import Literal

    out_type = str
    if metric_cfg["type"] == "choice":
        out_type = Literal[tuple(metric_cfg["labels"])]
    fields = {name: (str, dspy.InputField()) for name in inputs}
    fields[output] = (out_type, dspy.OutputField())
    signature = dspy.Signature(fields, cfg["description"])

    def example(row):
        vals = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in row.items() if k in inputs}
        return dspy.Example(**vals, **{output: row[output]}).with_inputs(*inputs)

    trainset = [example(r) for r in splits["train"]]
    valset = [example(r) for r in splits["dev"][: args.dev_limit]]
    testset = [example(r) for r in splits["test"][: args.test_limit]]

    metric_calls = [0]

    def count():
        with lock:
            metric_calls[0] += 1

    def metric(gold, pred, trace=None):
        count()
        return scorer(gold[output], getattr(pred, output, ""))[0]

    def gepa_metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
        count()
        s, feedback = scorer(gold[output], getattr(pred, output, ""))
        return dspy.Prediction(score=s, feedback=feedback)

    def evaluate(program, devset):
        """Mean score on devset (failures score 0); not counted as search calls."""
        before = metric_calls[0]
        ev = dspy.Evaluate(devset=devset, metric=metric, num_threads=args.parallel,
                           display_progress=False, max_errors=len(devset) + 1, provide_traceback=False)
        res = ev(program)
        scores = [float(r[2]) if r[2] is not None else 0.0 for r in res.results]
        with lock:
            metric_calls[0] = before
        # what the program answered: a label (choice metrics) or "other"; "none" on a failure
        given = {}
        for r in res.results:
            got = getattr(r[1], output, None)
            if got is None:
                key = "none"
            elif metric_cfg["type"] == "choice":
                key = parse_choice(metric_cfg["labels"], got) or "other"
            else:
                key = "answered"
            given[key] = given.get(key, 0) + 1
        return sum(scores) / max(len(scores), 1), given

    program = dspy.Predict(signature)
    t = time.time()
    c0 = dict(calls)
    base_test, base_given = evaluate(program, testset)
    base_wall = time.time() - t
    print(f"# {args.task}: train {len(trainset)}, dev {len(valset)}, test {len(testset)}; "
          f"unoptimized test {base_test:.3f} ({calls['exec'] - c0['exec']} calls, {base_wall:.0f} s; "
          f"answers {base_given})",
          file=sys.stderr, flush=True)

    def run_one(opt):
        metric_calls[0] = 0
        c0, m0, x0 = dict(calls), meta_srv.metrics(), exec_srv.metrics()
        t = time.time()
        extra = {}
        if opt == "mipro":
            auto = os.environ.get("MIPRO_AUTO", "light")
            auto = None if auto in ("", "none", "None") else auto
            kw = dict(metric=metric, prompt_model=meta_lm, task_model=exec_lm, auto=auto,
                      num_threads=args.parallel, seed=args.seed,
                      max_bootstrapped_demos=int(os.environ.get("MIPRO_BOOTSTRAPPED_DEMOS", 4)),
                      max_labeled_demos=int(os.environ.get("MIPRO_LABELED_DEMOS", 4)))
            ckw = {}
            if auto is None:
                kw["num_candidates"] = int(os.environ.get("MIPRO_CANDIDATES", 2))
                ckw["num_trials"] = int(os.environ.get("MIPRO_TRIALS", 2))
                # as auto does: minibatches only when the valset is bigger than 50
                ckw["minibatch"] = len(valset) > 50
                ckw["minibatch_size"] = min(35, len(valset))
            extra = {"auto": auto, **{k: v for k, v in kw.items() if k.startswith(("num_", "max_"))}, **ckw}
            optimizer = dspy.MIPROv2(**kw)
            optimized = optimizer.compile(program.deepcopy(), trainset=trainset, valset=valset, **ckw)
            dev = getattr(optimized, "score", None)  # Evaluate's percentage
            dev = None if dev is None else dev / 100.0
        elif opt == "gepa":
            budget = {}
            if os.environ.get("GEPA_MAX_METRIC_CALLS"):
                budget["max_metric_calls"] = int(os.environ["GEPA_MAX_METRIC_CALLS"])
            elif os.environ.get("GEPA_MAX_FULL_EVALS"):
                budget["max_full_evals"] = int(os.environ["GEPA_MAX_FULL_EVALS"])
            else:
                budget["auto"] = os.environ.get("GEPA_AUTO", "light")
            extra = dict(budget)
            optimizer = dspy.GEPA(metric=gepa_metric, reflection_lm=meta_lm, num_threads=args.parallel,
                                  track_stats=True, seed=args.seed, **budget)
            optimized = optimizer.compile(program.deepcopy(), trainset=trainset, valset=valset)
            dr = getattr(optimized, "detailed_results", None)
            dev = None
            if dr is not None:
                dev = dr.val_aggregate_scores[dr.best_idx]
                extra["gepa_total_metric_calls"] = dr.total_metric_calls
                extra["gepa_full_val_evals"] = dr.num_full_val_evals
                extra["gepa_candidates"] = len(dr.candidates)
        else:
            raise SystemExit(f"unknown optimizer {opt!r} (mipro, gepa)")
        wall = time.time() - t
        compile_metric_calls = metric_calls[0]
        c1, m1, x1 = dict(calls), meta_srv.metrics(), exec_srv.metrics()
        if dev is None:
            dev = evaluate(optimized, valset)[0]
        t1 = time.time()
        test, test_given = evaluate(optimized, testset)
        test_wall = time.time() - t1
        pred = optimized.predictors()[0]
        row = {
            "optimizer": opt, "task": args.task, "dspy": dspy.__version__,
            "settings": extra, "train": len(trainset), "dev_n": len(valset), "test_n": len(testset),
            "metric_calls": compile_metric_calls,
            # examples a candidate was scored on (one program run each): GEPA's own count, which
            # leaves out its second metric call on each reflection-minibatch example (for the
            # feedback); MIPROv2 calls the metric once per run, so there the two are equal
            "examples_scored": extra.get("gepa_total_metric_calls", compile_metric_calls),
            "task_lm_calls": c1["exec"] - c0["exec"], "prompt_lm_calls": c1["meta"] - c0["meta"],
            "task_lm_tokens": {k: x1[k] - x0[k] for k in x1},
            "prompt_lm_tokens": {k: m1[k] - m0[k] for k in m1},
            "wall_secs": round(wall, 1),
            "dev_score": dev, "test_unoptimized": base_test, "test_optimized": test,
            "test_answers_unoptimized": base_given, "test_answers_optimized": test_given,
            "test_wall_secs": {"unoptimized": round(base_wall, 1), "optimized": round(test_wall, 1)},
            "instruction": pred.signature.instructions, "demos": len(pred.demos),
        }
        path = out / f"dspy-{args.task}-{opt}.json"
        path.write_text(json.dumps(row) + "\n")
        instr = " ".join(row["instruction"].split())
        instr = (instr[:80] + "…") if len(instr) > 80 else instr
        print(f"| {args.task} | {opt} | {row['metric_calls']} | {row['examples_scored']} | {row['task_lm_calls']} | "
              f"{row['prompt_lm_calls']} | {wall:.0f} s | {dev:.3f} | {base_test:.3f} | {test:.3f} | "
              f"{row['demos']} | {instr.replace('|', '/')} |", file=rows, flush=True)

    failed = []
    for opt in args.optimizers.split():
        try:
            run_one(opt)
        except Exception as e:  # one optimizer's failure: recorded, the next one still runs
            traceback.print_exc()
            failed.append(opt)
            err = f"{type(e).__name__}: {e}"
            (out / f"dspy-{args.task}-{opt}.json").write_text(
                json.dumps({"optimizer": opt, "task": args.task, "error": err}) + "\n")
            print(f"| {args.task} | {opt} | failed: {err.splitlines()[0][:100].replace('|', '/')} |"
                  + " |" * 9, file=rows, flush=True)
    if failed:
        raise SystemExit(f"failed: {' '.join(failed)}")


if __name__ == "__main__":
    main()
