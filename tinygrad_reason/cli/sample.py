"""`tinygrad-reason sample`: answer one question with a trained run, streaming its tokens."""
from __future__ import annotations

from .runs import load_run


def cmd_sample(args) -> None:
    from ..data.formats import parse_completion
    from ..data.records import Record
    from ..generate import SamplingConfig, generate_stream
    cfg, tok, model, _ = load_run(args.run, splits="none")
    fmt = cfg["train"]["format"]
    from ..data.formats import prompt_ids
    prompt = prompt_ids(Record(question=args.question, steps=[], answer=""), tok, fmt)
    scfg = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          max_new_tokens=args.max_new_tokens, stop_ids=(tok.eot_id,), seed=args.seed)
    out = []
    for t in generate_stream(model, prompt, scfg):
        out.append(t)
        if not tok.is_special(t):
            print(tok.decode([t]), end="", flush=True)
        elif t == tok.step_id:
            print(flush=True)
    print(f"\nanswer: {parse_completion(out, tok, fmt)}")


def add_parser(sub, common) -> None:
    p = sub.add_parser("sample", help="answer one question with a trained run, streaming tokens")
    p.add_argument("--run", required=True, help="run directory written by train")
    p.add_argument("--question", required=True, help="the problem text")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)
