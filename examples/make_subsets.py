#!/usr/bin/env python3
"""Rebuild the example data subsets from ../shared/benchmarks (run from the repository root).

Each example folder keeps a few hundred rows at most, with SOURCE.md saying where they come from.
Deterministic: same inputs, same files.
"""
import csv, gzip, json, os, random, shutil, sys

SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join("..", "shared", "benchmarks")
ROOT = "examples"


def jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def sst2():
    def rows(name):
        out = []
        for line in open(os.path.join(SRC, "sst2", name)):
            if line.strip():
                label, text = line.rstrip("\n").split(" ", 1)
                out.append({"sentence": text, "label": "positive" if label == "1" else "negative"})
        return out
    jsonl(f"{ROOT}/sst2/data/train.jsonl", rows("stsa.binary.train")[:100])
    jsonl(f"{ROOT}/sst2/data/dev.jsonl", rows("stsa.binary.dev")[:200])
    jsonl(f"{ROOT}/sst2/data/test.jsonl", rows("stsa.binary.test")[:200])


TREC = {"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "human", "LOC": "location", "NUM": "number"}


def trec():
    def rows(name):
        out = []
        for line in open(os.path.join(SRC, "trec", name), encoding="latin-1"):
            if line.strip():
                label, question = line.rstrip("\n").split(" ", 1)
                out.append({"question": question, "label": TREC[label.split(":")[0]]})
        return out
    train = rows("train.txt")
    random.Random(7).shuffle(train)
    jsonl(f"{ROOT}/trec/data/train.jsonl", train[:100])
    jsonl(f"{ROOT}/trec/data/dev.jsonl", train[100:300])
    jsonl(f"{ROOT}/trec/data/test.jsonl", rows("test.txt")[:200])


AGNEWS = {"1": "world", "2": "sports", "3": "business", "4": "technology"}


def agnews():
    with open(os.path.join(SRC, "agnews", "test.csv"), newline="") as f:
        rows = [{"title": r["Title"], "description": r["Description"].replace("\\", " "), "label": AGNEWS[r["Class Index"]]} for r in csv.DictReader(f)]
    random.Random(7).shuffle(rows)
    for name, part in [("train", rows[:100]), ("dev", rows[100:300]), ("test", rows[300:500])]:
        os.makedirs(f"{ROOT}/agnews/data", exist_ok=True)
        with open(f"{ROOT}/agnews/data/{name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["title", "description", "label"])
            w.writeheader()
            w.writerows(part)


def gsm8k():
    with gzip.open(os.path.join(SRC, "gsm8k", "train.jsonl.gz"), "rt") as f:
        train = [json.loads(l) for l in f if l.strip()]
    test = [json.loads(l) for l in open(os.path.join(SRC, "gsm8k", "test.jsonl")) if l.strip()]
    jsonl(f"{ROOT}/gsm8k/data/train.jsonl", train[:50])
    jsonl(f"{ROOT}/gsm8k/data/dev.jsonl", train[50:150])
    jsonl(f"{ROOT}/gsm8k/data/test.jsonl", test[:100])


def bbh(task):
    os.makedirs(f"{ROOT}/bbh_{task}/data", exist_ok=True)
    shutil.copyfile(os.path.join(SRC, "bbh", f"{task}.json"), f"{ROOT}/bbh_{task}/data/examples.json")


def hotpotqa():
    rows = json.load(open(os.path.join(SRC, "hotpotqa", "hotpot_dev_v1_simplified.json")))
    rows = [{"question": r["question"], "answer": r["answer"]} for r in rows]
    random.Random(7).shuffle(rows)
    for name, part in [("train", rows[:100]), ("dev", rows[100:200]), ("test", rows[200:300])]:
        jsonl(f"{ROOT}/hotpotqa/data/{name}.jsonl", part)


BBH = ["boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa",
       "formal_fallacies", "navigate", "object_counting", "sports_understanding", "web_of_lies"]

if __name__ == "__main__":
    sst2(); trec(); agnews(); gsm8k(); hotpotqa()
    for task in BBH:
        bbh(task)
