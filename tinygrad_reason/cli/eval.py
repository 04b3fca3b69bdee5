"""`tinygrad-reason eval`: a trained run on a split, greedy or by --methods (self-consistency, the
calculator tool, refinement) or as a --curve of self-consistency accuracy against paths."""
from __future__ import annotations

import os

from ..io.atomic import write_json, write_text
from .config import CLIError, setup_threads
from .runs import evaluate_split, fresh_split, load_run, load_verifier


def cmd_eval(args) -> None:
    specs = ns = None
    if args.methods is not None and args.curve is not None:
        raise CLIError("--curve and --methods are separate evaluations; give one of them")
    if args.methods is not None:
        from ..reasoning.methods import parse_methods
        try:
            specs = parse_methods(args.methods)
        except ValueError as e:
            raise CLIError(f"--methods: {e}") from None
    if args.curve is not None:
        ns = parse_curve(args.curve)
    if args.temperature is not None and not args.temperature > 0:
        raise CLIError(f"--temperature must be > 0, got {args.temperature}")
    if args.threads is not None:
        setup_threads({"threads": args.threads})
    splits_known = ("ood", "test", "train", "fresh")  # make_splits' keys, and problems new to the run
    if args.split not in splits_known:
        raise CLIError(f"--split must be one of {list(splits_known)}, got {args.split!r}")
    cfg, tok, model, splits = load_run(args.run, splits="all" if args.split in ("train", "fresh") else "eval")
    if args.split == "fresh":
        records = fresh_split(cfg, args.n or 1000, splits)
    else:
        records = splits[args.split][:args.n] if args.n else splits[args.split]
    if specs is not None:
        _eval_methods(args, specs, cfg, tok, model, records)
        return
    if ns is not None:
        _eval_curve(args, ns, cfg, tok, model, records)
        return
    result = evaluate_split(model, tok, records, cfg["train"]["format"], cfg)
    result.update(split=args.split, method="greedy", run=args.run)
    out = args.out or os.path.join(args.run, f"eval-{args.split}.json")
    write_json(out, result)
    print(f"| method | split | accuracy | n | 95% CI | tokens | seconds |\n| --- | --- | --- | --- | --- | --- | --- |\n"
          f"| greedy | {args.split} | {result['accuracy']:.1%} | {result['n']} | "
          f"[{result['ci95'][0]:.1%}, {result['ci95'][1]:.1%}] | {result['generated_tokens']} | {result['seconds']:.1f} |")


def parse_curve(text: str) -> list:
    """'1,2,4,8' -> [1, 2, 4, 8] (sorted); CLIError (one line) for anything but distinct integers >= 1."""
    from ..reasoning.self_consistency import SEED_STRIDE
    ns = []
    for raw in str(text).split(","):
        item = raw.strip()
        try:
            n = int(item)
        except ValueError:
            raise CLIError(f"--curve: {item!r} is not an integer; expected paths per problem like 1,2,4,8,16,32"
                           ) from None
        if n < 1:
            raise CLIError(f"--curve: the number of paths must be >= 1, got {n}")
        if n > SEED_STRIDE:
            raise CLIError(f"--curve: at most {SEED_STRIDE} paths per problem, got {n}")
        if n in ns:
            raise CLIError(f"--curve: {n} is listed twice")
        ns.append(n)
    return sorted(ns)


def eval_settings(args, cfg):
    from ..reasoning.methods import EvalSettings
    return EvalSettings(max_new_tokens=cfg["train"]["max_new_tokens"], seed=args.seed or 0,
                        temperature=0.7 if args.temperature is None else args.temperature,
                        rows_per_call=cfg["train"].get("eval_batch", 64),
                        search_expand=getattr(args, "search_expand", 4), search_beam=getattr(args, "search_beam", 2))


def _eval_methods(args, specs, cfg, tok, model, records) -> None:
    """eval --methods: every method on the same problems; JSON + markdown table written and printed."""
    from ..reasoning.methods import methods_table, run_method
    settings = eval_settings(args, cfg)
    fmt = cfg["train"]["format"]
    if fmt != "cot" and any(s.kind == "refine" for s in specs):
        raise CLIError("--methods: refine@K needs a chain-of-thought run (train --format cot)")
    verifiers = {}
    needed = {k for s in specs for k in s.verifiers} | ({"any"} if any(s.kind == "wvote" and not s.by for s in specs)
                                                         else set())
    for kind in ("orm", "prm"):
        directory = getattr(args, kind)
        if directory:
            verifiers[kind] = load_verifier(directory, args.run)[0]
        elif kind in needed:
            raise CLIError(f"--methods {','.join(s.name for s in specs if kind in s.verifiers)} needs --{kind} DIR "
                           f"(a verifier trained by: tinygrad-reason verifier train --kind {kind})")
    if "any" in needed and not verifiers:
        raise CLIError("--methods wvote@N needs --orm DIR or --prm DIR")
    rows = [run_method(s, model, tok, records, fmt, settings, verifiers) for s in specs]
    table = methods_table(rows, args.split)
    out = args.out or os.path.join(args.run, f"eval-methods-{args.split}.json")
    write_json(out, {"run": args.run, "split": args.split, "format": fmt, "n": len(records),
                     "settings": vars(settings), "results": rows})
    write_text(os.path.splitext(out)[0] + ".md", table)
    print(table, end="")


def _eval_curve(args, ns, cfg, tok, model, records) -> None:
    """eval --curve: self-consistency accuracy at every N from ONE set of max(N) sampled paths per
    problem (SC@n votes over the first n; the same row seeds as --methods sc@n, so its sc@n is this
    curve's point n). JSON, markdown table (.md) and, with matplotlib, a PNG (.png) beside it."""
    from ..generate import SamplingConfig
    from ..reasoning.self_consistency import accuracy_vs_n, curve_table, plot_curve
    settings = eval_settings(args, cfg)
    fmt = cfg["train"]["format"]
    scfg = SamplingConfig(temperature=settings.temperature, max_new_tokens=settings.max_new_tokens,
                          stop_ids=(tok.eot_id,), seed=settings.seed)
    curve = accuracy_vs_n(model, tok, records, fmt, scfg, ns=ns, weighting=settings.weighting,
                          rows_per_call=settings.rows_per_call)
    table = curve_table(curve)
    out = args.out or os.path.join(args.run, f"curve-{args.split}.json")
    base = os.path.splitext(out)[0]
    write_json(out, {"run": args.run, "split": args.split, "format": fmt, "n": len(records),
                     "settings": vars(settings), **curve})
    write_text(base + ".md", table)
    print(table, end="")
    print(f"\n{len(records)} problems x {ns[-1]} paths: {curve['generated_tokens']} tokens generated, "
          f"{curve['seconds']:.1f} s; wrote {out} and {base}.md")
    if plot_curve(curve, base + ".png"):
        print(f"wrote {base}.png")
    else:
        print("no PNG: matplotlib is not installed (pip install matplotlib)")


def add_parser(sub, common) -> None:
    p = sub.add_parser("eval", help="evaluate a trained run on a split (greedy, or --methods: "
                                    "self-consistency, calculator tool, refinement; exact match)")
    p.add_argument("--run", required=True, help="run directory written by train")
    p.add_argument("--split", default="test", help="test, ood, train, or fresh: --n problems (default 1000) of the "
                   "task in none of the run's splits, drawn with another seed (default test)")
    p.add_argument("--n", type=int, default=0, help="evaluate only the first N problems (0: all)")
    p.add_argument("--out", help="JSON result file (default RUN/eval-SPLIT.json; with --methods "
                                 "RUN/eval-methods-SPLIT.json and a markdown table beside it, .md; with "
                                 "--curve RUN/curve-SPLIT.json)")
    p.add_argument("--methods", help="comma-separated evaluation methods: greedy, tool (calculator), sc@N "
                                     "(self-consistency over N samples), refine@K (K refinement rounds), "
                                     "bon@N:orm / bon@N:prm / bon@N:prm-prod (best of N by a verifier; prm "
                                     "scores a solution by its weakest step, prm-prod by the product), "
                                     "wvote@N[:orm|:prm] (verifier-weighted vote), search:prm (PRM-guided "
                                     "step search); e.g. greedy,sc@16,bon@16:orm,bon@16:prm (default: greedy)")
    p.add_argument("--orm", help="outcome verifier directory (verifier train --kind orm) for bon / wvote")
    p.add_argument("--prm", help="process verifier directory (verifier train --kind prm) for bon / wvote / search")
    p.add_argument("--search-expand", type=int, default=4, help="search:prm: candidate steps per partial solution")
    p.add_argument("--search-beam", type=int, default=2, help="search:prm: partial solutions kept per step")
    p.add_argument("--curve", metavar="N1,N2,...",
                   help="self-consistency accuracy vs number of sampled paths, e.g. 1,2,4,8,16,32: max(N) "
                        "paths sampled once per problem, SC@n votes over the first n; writes "
                        "RUN/curve-SPLIT.json (or --out), a markdown table (.md) and, with matplotlib, a "
                        "PNG (.png) beside it; not together with --methods")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature of sc@N, --curve and refine's resampling (default 0.7)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed of --methods and --curve (default 0)")
    p.add_argument("--threads", type=int, help="BLAS and kernel threads (1 is fastest on a busy machine)")
    p.set_defaults(func=cmd_eval)
