"""`tinygrad-reason sample`: answer one question with a trained run, or chat with a pretrained model
(--model: a GGUF file, a Hugging Face folder or a known model's name), streaming its tokens."""
from __future__ import annotations

import codecs

from .config import CLIError
from .runs import load_run


def cmd_chat(args) -> None:
    from ..generate import SamplingConfig, generate_stream
    from .models import load_model
    p = load_model(args.model)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
        [{"role": "user", "content": args.chat}]
    prompt = p.tokenizer.encode(p.chat.render(messages, add_generation_prompt=True), allow_special=True)
    stops = tuple(i for i in (p.tokenizer.eot_id, p.tokenizer.special_ids.get("<|im_end|>")) if i is not None)
    scfg = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          max_new_tokens=args.max_new_tokens, stop_ids=stops, seed=args.seed)
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")   # a token may end mid-character
    for t in generate_stream(p.model, prompt, scfg):
        if not p.tokenizer.is_special(t):
            print(text.decode(p.tokenizer.token_bytes(t)), end="", flush=True)
    print(text.decode(b"", final=True))


def cmd_sample(args) -> None:
    if args.model:
        if args.run or not args.chat:
            raise CLIError("sample --model takes --chat TEXT (and no --run)")
        return cmd_chat(args)
    if not args.run or not args.question:
        raise CLIError("sample needs --run and --question (or --model and --chat)")
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
    p = sub.add_parser("sample", help="answer one question with a trained run, or chat with a pretrained model")
    p.add_argument("--run", help="run directory written by train")
    p.add_argument("--question", help="the problem text (with --run)")
    p.add_argument("--model", help="a GGUF file, a Hugging Face folder, or a known model (smollm2-135m)")
    p.add_argument("--chat", help="the user message (with --model), rendered with the model's chat template")
    p.add_argument("--system", help="a system message (with --model); else the template's default")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)
