"""`tinygrad-reason eval-model`: a pretrained chat model (--model: GGUF, HF folder, a known name or an
`rl --model` output) on a file of word problems (GSM8K or MATH JSON lines) or a built-in task, by --methods greedy, sc@N, tool
(reasoning/chat_eval.py).

    tinygrad-reason eval-model --model smollm2-135m --data ../shared/data/gsm8k/test.jsonl \\
        --methods greedy,tool,sc@8 --n 500 --out runs/smollm2-gsm8k

OUT/METHOD.jsonl gets one line per problem as each batch finishes, so an interrupted run resumes where it
stopped (the same options again); OUT/summary.json and OUT/table.md hold the accuracies with their 95%
Wilson intervals.
"""
from __future__ import annotations

import json
import os
import re
import time

from ..io.atomic import write_json, write_text
from .config import CLIError, setup_threads


def _done_rows(path: str) -> list:
    """The rows already written (a torn last line from an interrupted run is dropped and rewritten)."""
    if not os.path.exists(path):
        return []
    rows, good = [], 0
    with open(path, "rb") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                break
            good += len(line)
    if good != os.path.getsize(path):
        with open(path, "r+b") as f:
            f.truncate(good)
    return rows


def _load_records(path: str, kind: str, n: int, seed: int):
    """A GSM8K / MATH file, or a built-in task: 'arithmetic:S' is N problems of S steps each,
    'multiplication:AxB' N problems 'What is a x b?' with a of A digits and b of B digits."""
    from ..data.loaders import load_gsm8k, load_math
    if path.startswith("multiplication:"):
        from ..data.multiplication import generate_multiplication
        m = re.fullmatch(r"multiplication:([1-9])x([1-9])", path)
        if m is None:
            raise CLIError(f"--data {path}: the built-in task is multiplication:AxB with A and B digits, 1-9 each")
        a, b = int(m.group(1)), int(m.group(2))
        return generate_multiplication(n or 200, seed=seed, min_digits_a=a, max_digits_a=a, min_digits_b=b,
                                       max_digits_b=b)
    if path.startswith("arithmetic:"):
        from ..data.arithmetic import generate_arithmetic
        steps = path.split(":", 1)[1]
        if not steps.isdigit() or not 1 <= int(steps) <= 8:
            raise CLIError(f"--data {path}: the built-in task is arithmetic:S with S steps, 1 <= S <= 8")
        return generate_arithmetic(n or 200, seed=seed, min_steps=int(steps), max_steps=int(steps))
    if kind not in ("gsm8k", "math"):
        raise CLIError(f"--data-format must be gsm8k or math, got {kind!r}")
    return (load_gsm8k if kind == "gsm8k" else load_math)(path).records


def table(summary: dict, title: str) -> str:
    lines = [f"### {title}", "", "| method | accuracy | 95% CI | problems | tokens / problem | paths ended | tool calls |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for method, s in summary.items():
        lo, hi = s["ci95"]
        lines.append(f"| {method} | {100 * s['accuracy']:.1f}% ({s['correct']}/{s['n']}) | {100 * lo:.1f}-{100 * hi:.1f} "
                     f"| {s['n']} | {s['tokens_per_problem']:.0f} | {100 * s['finished_share']:.0f}% | {s['tool_calls']} |")
    return "\n".join(lines) + "\n"


def cmd_eval_model(args) -> None:
    from ..reasoning.chat_eval import parse_chat_method, run_chat_method, summarize
    from .models import load_model
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        for m in methods:
            parse_chat_method(m)
    except ValueError as e:
        raise CLIError(f"--methods: {e}") from None
    if args.threads is not None:
        setup_threads({"threads": args.threads})
    records = _load_records(args.data, args.data_format, args.n, args.seed)
    indices = list(range(len(records)))[args.start:]
    indices = indices[:args.n] if args.n else indices
    if not indices:
        raise CLIError(f"--data {args.data}: no problems in the range asked for ({len(records)} in the file)")
    p = load_model(args.model)
    os.makedirs(args.out, exist_ok=True)
    summary = {}
    for method in methods:
        path = os.path.join(args.out, f"{method.replace('@', '')}.jsonl")
        done = {r["index"]: r for r in _done_rows(path)}
        todo = [i for i in indices if i not in done]
        t0 = time.time()
        with open(path, "a") as f:
            for start in range(0, len(todo), args.batch):
                chunk = todo[start:start + args.batch]
                for row in run_chat_method(p, records, chunk, method, args.max_new_tokens, args.temperature,
                                           args.seed, rows_per_call=args.batch):
                    done[row.index] = row.to_json()
                    f.write(json.dumps(row.to_json()) + "\n")
                f.flush()
                s = summarize([done[i] for i in indices if i in done])
                print(f"{method}: {s['n']}/{len(indices)} problems, {100 * s['accuracy']:.1f}% correct, "
                      f"{time.time() - t0:.0f} s", flush=True)
        summary[method] = summarize([done[i] for i in indices])
        summary[method]["seconds_this_run"] = round(time.time() - t0, 1)
    meta = {"model": p.name, "source": p.source, "data": os.path.basename(args.data), "first": indices[0],
            "problems": len(indices), "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
            "seed": args.seed}
    write_json(os.path.join(args.out, "summary.json"), {"meta": meta, "methods": summary})
    text = table(summary, f"{p.name} on {meta['data']} (problems {indices[0]}-{indices[-1]})")
    write_text(os.path.join(args.out, "table.md"), text)
    print(text)


def add_parser(sub, common) -> None:
    p = sub.add_parser("eval-model", help="a pretrained chat model on GSM8K / MATH problems (greedy, sc@N, "
                                          "calculator tool), exact-match graded")
    p.add_argument("--model", required=True, help="a GGUF file, a Hugging Face folder, or a known model (smollm2-135m)")
    p.add_argument("--data", required=True, help="JSON lines of problems (GSM8K: question/answer; MATH: problem/solution), or "
                   "arithmetic:S for --n (default 200) problems of the built-in task with S steps, or multiplication:AxB "
                   "for 'What is a x b?' with A- and B-digit numbers (both seeded by --seed)")
    p.add_argument("--data-format", default="gsm8k", help="gsm8k (default) or math")
    p.add_argument("--methods", default="greedy", help="comma-separated: greedy (zero-shot CoT), sc@N (self-consistency "
                   "over N sampled paths), tool (greedy with the inline calculator); default greedy")
    p.add_argument("--n", type=int, default=0, help="evaluate N problems (0: all)")
    p.add_argument("--start", type=int, default=0, help="first problem's index in the file")
    p.add_argument("--out", required=True, help="output folder (METHOD.jsonl per method, summary.json, table.md)")
    p.add_argument("--max-new-tokens", type=int, default=320)
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of sc@N (default 0.7)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64, help="sequences decoded together (sc@N: N per problem)")
    p.add_argument("--threads", type=int, help="BLAS and kernel threads (default: the library's)")
    p.set_defaults(func=cmd_eval_model)
