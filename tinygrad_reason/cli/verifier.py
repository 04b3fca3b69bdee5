"""`tinygrad-reason verifier label|train|eval`: verifiers for a trained chain-of-thought run.

    verifier label --run R --out labels.jsonl      N sampled solutions per training problem, each
                                                   with its outcome and exact step labels (--mc K:
                                                   also Monte-Carlo step values from K rollouts)
    verifier train --run R --labels L --out V      an outcome (--kind orm) or process (--kind prm)
                                                   verifier on those labels, on the train loop
    verifier eval --run R --orm V1 --prm V2        accuracy vs N for majority vote, best-of-N and
                                                   weighted votes on a held-out split, pass@N,
                                                   calibration and AUROC of each verifier

A verifier directory holds verifier.json (the policy run, the VerifierConfig, the label file),
checkpoint/ (the trunk and head, written atomically by the loop), metrics.jsonl and results.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

from ..io.atomic import write_json, write_text
from .config import CLIError, setup_threads
from .runs import VERIFIER_FILE, load_run, load_verifier


def _sampling(args, tok, max_new_tokens: int):
    from ..generate import SamplingConfig
    if not args.temperature > 0:
        raise CLIError(f"--temperature must be > 0 (sampling), got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise CLIError(f"--top-p must be in (0, 1], got {args.top_p}")
    return SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=max_new_tokens,
                          stop_ids=(tok.eot_id,), seed=args.seed)


def _cot_run(args, splits: str):
    if args.threads is not None:
        setup_threads({"threads": args.threads})
    cfg, tok, model, data = load_run(args.run, splits=splits)
    if cfg["train"]["format"] != "cot":
        raise CLIError(f"run {args.run} was trained in format {cfg['train']['format']!r}; verifiers score "
                       "chains of thought (train --format cot)")
    return cfg, tok, model, data


# ------------------------------------------------------------------ label
def cmd_label(args) -> None:
    from ..reasoning.verifier_data import sample_labelled, save_labels
    if args.samples < 1 or args.problems < 0:
        raise CLIError("--samples must be >= 1 and --problems >= 0")
    cfg, tok, model, splits = _cot_run(args, "all" if args.split == "train" else "eval")
    records = splits[args.split][:args.problems] if args.problems else splits[args.split]
    scfg = _sampling(args, tok, cfg["train"]["max_new_tokens"])
    t0 = time.perf_counter()
    solutions = sample_labelled(model, tok, records, args.samples, scfg, rows_per_call=args.rows_per_call)
    seconds = time.perf_counter() - t0
    meta = {"run": os.path.abspath(args.run), "split": args.split, "problems": len(records),
            "samples": args.samples, "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
            "max_new_tokens": cfg["train"]["max_new_tokens"], "sample_seconds": round(seconds, 1)}
    if args.mc:
        from ..reasoning.verifier_data import mc_step_labels
        t1 = time.perf_counter()
        solutions = mc_step_labels(model, tok, records, solutions, args.mc, scfg, rows_per_call=args.rows_per_call)
        meta.update(mc_k=args.mc, mc_seconds=round(time.perf_counter() - t1, 1))
    if args.mc:
        from ..reasoning.verifier_data import label_agreement
        meta["agreement"] = label_agreement(solutions)
    save_labels(args.out, solutions, meta)
    right = sum(s.correct for s in solutions)
    steps = [v for s in solutions for v in s.step_labels]
    print(f"{len(solutions)} solutions of {len(records)} problems in {seconds:.1f} s: {right} right "
          f"({right / max(len(solutions), 1):.1%}), {len(steps)} steps, {sum(steps)} labelled right; wrote {args.out}")
    if args.mc:
        for rule, a in (("hard (any of K right)", meta["agreement"]["hard"]),
                        ("soft (value >= 0.5)", meta["agreement"]["soft"])):
            c = a["confusion"]
            print(f"Monte-Carlo vs exact step labels, {rule}: agreement {a['agreement']:.1%} of {a['n']} steps, "
                  f"Cohen's kappa {a['kappa']:.3f}; exact right / MC wrong {c[1][0]}, exact wrong / MC right {c[0][1]}")


# ------------------------------------------------------------------ train
def verifier_config(args, out: str):
    from ..train.verifier import VerifierConfig
    fields = {"kind": args.kind, "orm_targets": args.targets, "trunk": args.trunk, "head_hidden": args.head_hidden,
              "lm_weight": args.lm_weight, "balance": args.balance, "batch_size": args.batch_size,
              "steps": args.steps, "lr": args.lr, "min_lr": args.lr / 10, "eval_every": args.eval_every,
              "seed": args.seed, "checkpoint_dir": os.path.join(out, "checkpoint"),
              "log_path": os.path.join(out, "metrics.jsonl"), "plot_path": os.path.join(out, "curves.png")}
    try:
        return VerifierConfig(**fields)
    except (TypeError, ValueError) as e:
        raise CLIError(f"verifier config: {e}") from None


def cmd_train(args) -> None:
    from ..nn import Verifier
    from ..reasoning.verifier_data import load_labels
    from ..reasoning.verifiers import examples_from_labels, split_by_problem
    from ..train.verifier import train_verifier
    vcfg = verifier_config(args, args.out)
    if not 0 <= args.held_out < 1:
        raise CLIError(f"--held-out must be in [0, 1), got {args.held_out}")
    cfg, tok, model, _ = _cot_run(args, "none")
    meta, solutions = load_labels(args.labels)
    train_s, held_s = split_by_problem(solutions, args.held_out, args.seed)
    train_x = examples_from_labels(train_s, tok, vcfg.kind, vcfg.orm_targets, args.labels_source)
    held_x = examples_from_labels(held_s, tok, vcfg.kind, vcfg.orm_targets, args.labels_source)
    verifier = Verifier(model, vcfg.head_hidden or None, frozen=vcfg.trunk == "frozen")
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, VERIFIER_FILE),
               {"run": os.path.abspath(args.run), "labels": os.path.abspath(args.labels),
                "labels_source": args.labels_source, "held_out": args.held_out, "labels_meta": meta,
                "config": {k: v for k, v in dataclasses.asdict(vcfg).items()
                           if k not in ("checkpoint_dir", "log_path", "plot_path")}})
    t0 = time.perf_counter()
    result = train_verifier(verifier, tok.pad_id, train_x, held_x, vcfg)
    last = result["history"][-1] if result["history"] else {}
    summary = {"kind": vcfg.kind, "trunk": vcfg.trunk, "train_solutions": len(train_s),
               "held_out_solutions": len(held_s), "train_seconds": round(time.perf_counter() - t0, 1),
               "steps": result["steps_done"], "best_auroc": result["best_auroc"], "last_eval": last}
    write_json(os.path.join(args.out, "results.json"), summary)
    print(json.dumps(summary))


# ------------------------------------------------------------------ eval
def cmd_eval(args) -> None:
    from ..reasoning.verifiers import plot_reliability, plot_verifier_curve, verifier_curve, verifier_curve_table
    from .eval import parse_curve
    if not args.orm and not args.prm:
        raise CLIError("verifier eval: give --orm DIR, --prm DIR or both")
    ns = parse_curve(args.curve)
    cfg, tok, model, splits = _cot_run(args, "eval")
    if args.split not in ("test", "ood"):
        raise CLIError(f"--split must be test or ood, got {args.split!r}")
    records = splits[args.split][:args.n] if args.n else splits[args.split]
    orm = load_verifier(args.orm, args.run)[0] if args.orm else None
    prm = load_verifier(args.prm, args.run)[0] if args.prm else None
    scfg = _sampling(args, tok, cfg["train"]["max_new_tokens"])
    curve = verifier_curve(model, tok, records, "cot", scfg, ns, orm, prm, args.rows_per_call)
    report = curve_report(curve, model, tok, records, cfg)
    out = args.out or os.path.join(args.run, f"verifier-curve-{args.split}.json")
    base = os.path.splitext(out)[0]
    write_json(out, {"run": args.run, "orm": args.orm, "prm": args.prm, "split": args.split,
                     "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed, **curve, **report})
    text = verifier_curve_table(curve) + "\n" + report["markdown"]
    write_text(base + ".md", text)
    print(text, end="")
    print(f"\nwrote {out} and {base}.md")
    if plot_verifier_curve(curve, base + ".png", f"{args.split}, {len(records)} problems"):
        print(f"wrote {base}.png")
    if report["calibration"] and plot_reliability(report["calibration"], base + "-reliability.png",
                                                  f"{args.split}: {len(curve['samples'])} sampled solutions"):
        print(f"wrote {base}-reliability.png")


def curve_report(curve: dict, model, tok, records, cfg) -> dict:
    """Greedy accuracy on the same problems, paired tests at the largest N, calibration and AUROC."""
    from ..grading.rewards import is_correct
    from ..train.evaluation import greedy_answers
    from ..train.stats import auroc, grouped_auroc, mcnemar_p, reliability, two_proportion_p
    answers, _ = greedy_answers(model, tok, records, "cot", cfg["train"]["max_new_tokens"], 64)
    greedy = [bool(is_correct(a, r.answer)) for a, r in zip(answers, records)]
    n, big = len(records), curve["ns"][-1]
    lines = [f"greedy decoding on the same problems: {sum(greedy)}/{n} ({sum(greedy) / max(n, 1):.1%})", "",
             f"| at N = {big} | accuracy | vs greedy (McNemar p) | vs majority (McNemar p) | vs majority "
             "(two-proportion p) |", "| --- | --- | --- | --- | --- |"]
    tests = {}
    maj = curve["right"]["majority"][big]
    for m in curve["methods"]:
        r = curve["right"][m][big]
        tests[m] = {"vs_greedy_mcnemar": mcnemar_p(r, greedy), "vs_majority_mcnemar": mcnemar_p(r, maj),
                    "vs_majority_two_proportion": two_proportion_p(sum(r), n, sum(maj), n)}
        lines.append(f"| {m} | {sum(r) / max(n, 1):.1%} | {tests[m]['vs_greedy_mcnemar']:.3g} | "
                     f"{tests[m]['vs_majority_mcnemar']:.3g} | {tests[m]['vs_majority_two_proportion']:.3g} |")
    calibration = {}
    labels = [s[4] for s in curve["samples"]]
    problems = [s[0] for s in curve["samples"]]
    for name, idx in (("orm", 2), ("prm_min", 3)):
        scores = [s[idx] for s in curve["samples"]]
        if scores and scores[0] is not None:
            within, groups = grouped_auroc(scores, labels, problems)
            calibration[name] = {"auroc": auroc(scores, labels), "auroc_within_problem": within,
                                 "problems_with_both": groups, **reliability(scores, labels)}
    lines += ["", "| verifier | AUROC, all samples | AUROC within a problem (mean) | ECE | Brier | samples | right |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, c in calibration.items():
        lines.append(f"| {name} | {c['auroc']:.3f} | {c['auroc_within_problem']:.3f} ({c['problems_with_both']} "
                     f"problems) | {c['ece']:.3f} | {c['brier']:.3f} | {c['n']} | {sum(labels)} |")
    passes = curve["verifier_passes"]
    tok_s = curve["scored_tokens"] * passes / max(curve["score_seconds"], 1e-9)
    lines += ["", f"sampling: {curve['generated_tokens']} tokens generated in {curve['sample_seconds']:.1f} s "
                  f"({curve['generated_tokens'] / max(curve['sample_seconds'], 1e-9):,.0f} tok/s); scoring: "
                  f"{curve['scored_tokens']} tokens (prompts and completions) read by each of {passes} verifier(s) "
                  f"in {curve['score_seconds']:.1f} s ({tok_s:,.0f} tok/s of verifier forward)"]
    return {"greedy_correct": sum(greedy), "greedy_right": greedy, "tests_at_max_n": tests,
            "calibration": calibration, "markdown": "\n".join(lines) + "\n"}


def add_parser(sub, common) -> None:
    p = sub.add_parser("verifier", help="outcome / process verifiers: label samples, train, evaluate",
                       description=__doc__.split("\n\n")[0])
    vsub = p.add_subparsers(dest="verifier_command", required=True, metavar="SUBCOMMAND")

    def shared(q, split_default):
        q.add_argument("--run", required=True, help="chain-of-thought run directory written by train")
        q.add_argument("--split", default=split_default, help=f"split to sample (default {split_default})")
        q.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
        q.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (default 1)")
        q.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
        q.add_argument("--rows-per-call", type=int, default=64, help="rows per batched generate call")
        q.add_argument("--threads", type=int, help="BLAS and kernel threads")

    q = vsub.add_parser("label", help="sample N solutions per problem and label them (outcome, exact steps)")
    shared(q, "train")
    q.add_argument("--out", required=True, help="label file to write (JSON lines)")
    q.add_argument("--problems", type=int, default=1000, help="first P problems of the split (0: all; default 1000)")
    q.add_argument("--samples", type=int, default=8, help="solutions per problem (default 8)")
    q.add_argument("--mc", type=int, default=0, help="also Monte-Carlo step values from K rollouts per step (0: off)")
    q.set_defaults(func=cmd_label)

    q = vsub.add_parser("train", help="train an ORM or PRM on a label file")
    q.add_argument("--run", required=True, help="the chain-of-thought run whose trunk the verifier starts from")
    q.add_argument("--labels", required=True, help="label file written by verifier label")
    q.add_argument("--out", required=True, help="verifier directory (created)")
    q.add_argument("--kind", choices=["orm", "prm"], default="orm", help="outcome or process verifier (default orm)")
    q.add_argument("--targets", choices=["token", "last"], default="token",
                   help="ORM targets: every completion token predicts the outcome, or the last token only")
    q.add_argument("--labels-source", choices=["exact", "mc"], default="exact",
                   help="PRM step labels: the task's exact checker or the Monte-Carlo values (default exact)")
    q.add_argument("--trunk", choices=["shared", "frozen"], default="shared",
                   help="shared: the trunk trains with the head; frozen: only the head trains")
    q.add_argument("--head-hidden", type=int, default=0, help="hidden units of an MLP head (0: linear head)")
    q.add_argument("--lm-weight", type=float, default=0.0, help="weight of a joint language-model loss (shared trunk)")
    q.add_argument("--balance", choices=["none", "reweight"], default="reweight",
                   help="class weights so right and wrong targets weigh the same (default reweight)")
    q.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    q.add_argument("--batch-size", type=int, default=32, help="solutions per step (default 32)")
    q.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3, cosine to lr/10)")
    q.add_argument("--eval-every", type=int, default=100, help="held-out evaluation every K steps")
    q.add_argument("--held-out", type=float, default=0.1, help="fraction of problems held out (default 0.1)")
    q.add_argument("--seed", type=int, default=0, help="seed of the held-out split and the batches")
    q.add_argument("--threads", type=int, help="BLAS and kernel threads")
    q.set_defaults(func=cmd_train)

    q = vsub.add_parser("eval", help="accuracy vs N: majority vote, best-of-N, weighted votes, pass@N, calibration")
    shared(q, "test")
    q.add_argument("--orm", help="outcome verifier directory")
    q.add_argument("--prm", help="process verifier directory")
    q.add_argument("--n", type=int, default=0, help="first N problems of the split (0: all)")
    q.add_argument("--curve", default="1,2,4,8,16", help="numbers of sampled solutions (default 1,2,4,8,16)")
    q.add_argument("--out", help="JSON result (default RUN/verifier-curve-SPLIT.json; .md and .png beside it)")
    q.set_defaults(func=cmd_eval)
