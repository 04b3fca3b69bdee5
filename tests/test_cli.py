"""The tinygrad-reason command line: train / eval / sample / compare on a tiny config, configs, errors, help."""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from tinygrad_reason import backend, cli
from tinygrad_reason.train.stats import two_proportion_p

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the tiny task and model every run here uses (a few seconds per run on a busy 2-core machine)
TINY = ["task.n_train=200", "task.n_test=10", "task.n_ood=10",
        'task.knobs={"min_steps": 2, "max_steps": 2, "max_value": 9}',
        "model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.context_length=128",
        "tokenizer.vocab_size=1200",          # ~1000 tokens: the prompts fit in 128
        "train.steps=4", "train.eval_every=2", "train.eval_size=5", "train.max_new_tokens=8",
        "train.batch_size=4", "train.warmup=1"]


def sets(items):
    return [a for item in items for a in ("--set", item)]


def run_main(argv):
    """cli.main in-process: (exit code, stdout, stderr); argparse exits become exit codes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def assert_clean_error(rc, err, *needles):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error" in lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One tiny chain-of-thought run, configured by a TOML file plus --set overrides."""
    d = tmp_path_factory.mktemp("cli")
    toml = d / "tiny.toml"
    toml.write_text('seed = 1\n[train]\nformat = "direct"\nlr = 0.004\nsteps = 50\n'
                    '[model]\npositions = "learned+sinusoidal"\n')
    out = d / "run"
    rc, stdout, stderr = run_main(["train", "--config", str(toml), *sets(TINY), "--format", "cot",
                                   "--threads", "1", "--out", str(out)])
    assert rc == 0, stderr
    return out, stdout


# ------------------------------------------------------------------ train
def test_train_writes_a_run_directory(run_dir):
    out, stdout = run_dir
    for name in ("config.json", "tokenizer.json", "metrics.jsonl", "results.json",
                 os.path.join("checkpoint", "checkpoint.json")):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    # TOML values kept, --set overrides them (steps 50 -> 4), --format overrides train.format
    assert cfg["seed"] == 1 and cfg["train"]["lr"] == 0.004 and cfg["model"]["positions"] == "learned+sinusoidal"
    assert cfg["train"]["steps"] == 4 and cfg["train"]["format"] == "cot" and cfg["threads"] == 1
    assert cfg["task"]["knobs"] == {"min_steps": 2, "max_steps": 2, "max_value": 9} and cfg["model"]["d_model"] == 16
    res = json.loads((out / "results.json").read_text())
    assert res["format"] == "cot" and res["steps"] == 4 and res["parameters"] > 0
    for split in ("test", "ood"):
        s = res[split]
        assert s["n"] == 10 and 0 <= s["accuracy"] <= 1 and s["accuracy"] == s["correct"] / 10
        lo, hi = s["ci95"]
        assert 0 <= lo <= s["accuracy"] <= hi <= 1 and hi > 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [2, 4]
    assert [r["n"] for r in rows if r["kind"] == "eval"] == [5, 5]
    assert json.loads((out / "checkpoint" / "checkpoint.json").read_text())["step"] == 4
    first = json.loads(stdout.splitlines()[0])
    assert first["format"] == "cot" and first["steps"] == 4
    assert "test: accuracy" in stdout and "ood: accuracy" in stdout


def test_train_again_resumes_and_refuses_a_changed_model(run_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_dir[0], out)
    before = (out / "config.json").read_text()
    # a different model config does not fit the checkpoint: a clean error, the run directory untouched
    rc, _, err = run_main(["train", *sets(TINY), "--set", "seed=1", "--set", "model.d_model=32", "--format", "cot",
                           "--out", str(out)])
    assert_clean_error(rc, err, "different model config")
    assert (out / "config.json").read_text() == before
    # the same config with more steps resumes from step 4
    rc, stdout, err = run_main(["train", *sets(TINY), "--set", "seed=1", "--set", "train.lr=0.004",
                                "--set", "model.positions=learned+sinusoidal", "--steps", "6", "--format", "cot",
                                "--out", str(out)])
    assert rc == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["steps"] == 6 and [h["step"] for h in res["history"]] == [2, 4, 6]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [2, 4, 6]      # appended, not restarted
    # a corrupted checkpoint is a one-line error too
    meta = out / "checkpoint" / "checkpoint.json"
    meta.write_text(meta.read_text()[:50])
    rc, _, err = run_main(["eval", "--run", str(out)])
    assert_clean_error(rc, err, "checkpoint")


# ------------------------------------------------------------------ eval / sample on the run
def test_eval_prints_a_markdown_table_and_writes_json(run_dir, tmp_path):
    out, _ = run_dir
    rc, stdout, stderr = run_main(["eval", "--run", str(out), "--split", "ood", "--n", "3"])
    assert rc == 0, stderr
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("| method | split | accuracy") and lines[1].startswith("| --- |")
    assert lines[2].startswith("| greedy | ood |") and "| 3 |" in lines[2]
    r = json.loads((out / "eval-ood.json").read_text())
    assert r["split"] == "ood" and r["n"] == 3 and r["method"] == "greedy" and len(r["ci95"]) == 2
    custom = tmp_path / "e.json"
    rc, stdout, _ = run_main(["eval", "--run", str(out), "--n", "2", "--out", str(custom)])
    assert rc == 0 and "| greedy | test |" in stdout
    assert json.loads(custom.read_text())["n"] == 2


def test_eval_fresh_split_holds_only_problems_new_to_the_run(run_dir):
    from tinygrad_reason.cli.runs import build_splits, fresh_split
    from tinygrad_reason.data.splits import dedup_keys
    out, _ = run_dir
    rc, stdout, stderr = run_main(["eval", "--run", str(out), "--split", "fresh", "--n", "4"])
    assert rc == 0, stderr
    assert "| greedy | fresh |" in stdout and json.loads((out / "eval-fresh.json").read_text())["n"] == 4
    cfg = json.loads((out / "config.json").read_text())
    splits = build_splits(cfg)
    fresh = fresh_split(cfg, 30, splits)
    known = {k for recs in splits.values() for r in recs for k in dedup_keys(r)}
    assert len(fresh) == 30 and not any(k in known for r in fresh for k in dedup_keys(r))
    assert [r.question for r in fresh_split(cfg, 30, splits)] == [r.question for r in fresh]   # the same each time


def test_eval_curve_writes_json_table_and_png(run_dir, tmp_path, monkeypatch):
    """--curve samples max(N) paths per problem ONCE (SC@n votes over prefixes) and writes JSON, .md, .png."""
    from tinygrad_reason.reasoning import self_consistency
    out, _ = run_dir
    rows = []
    real_generate = self_consistency.generate

    def counting_generate(model, prompts, cfg, **kw):
        rows.append(len(prompts))
        return real_generate(model, prompts, cfg, **kw)

    monkeypatch.setattr(self_consistency, "generate", counting_generate)
    rc, stdout, stderr = run_main(["eval", "--run", str(out), "--curve", "4, 1,2", "--n", "3", "--threads", "1"])
    assert rc == 0, stderr
    assert sum(rows) == 3 * 4                                  # 4 paths per problem, sampled once
    table = (out / "curve-test.md").read_text()
    assert stdout.startswith(table)
    lines = table.strip().splitlines()
    assert lines[0].startswith("| paths N | accuracy (count vote) | correct / n |") and lines[1].startswith("| --- |")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["1", "2", "4"]
    assert all(" / 3 |" in line for line in lines[2:])
    r = json.loads((out / "curve-test.json").read_text())
    assert r["ns"] == [1, 2, 4] and r["n"] == r["n_problems"] == 3 and r["split"] == "test"
    assert r["settings"]["temperature"] == 0.7 and r["settings"]["seed"] == 0
    assert set(r["accuracy"]) == {"1", "2", "4"} and len(r["answers"]) == 3 and len(r["answers"][0]) == 3
    assert (out / "curve-test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out / 'curve-test.png'}" in stdout
    # SC@n of the curve is --methods sc@n on the same problems (same seeds, same temperature)
    rc, stdout, stderr = run_main(["eval", "--run", str(out), "--methods", "sc@2", "--n", "3", "--threads", "1",
                                   "--out", str(tmp_path / "m.json")])
    assert rc == 0, stderr
    assert json.loads((tmp_path / "m.json").read_text())["results"][0]["correct"] == r["correct"]["2"]


def test_eval_curve_custom_out_and_no_matplotlib(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # import matplotlib -> ImportError
    custom = tmp_path / "sc.json"
    rc, stdout, stderr = run_main(["eval", "--run", str(run_dir[0]), "--curve", "1,3", "--n", "2", "--split", "ood",
                                   "--temperature", "1.0", "--seed", "5", "--threads", "1", "--out", str(custom)])
    assert rc == 0, stderr
    r = json.loads(custom.read_text())
    assert r["ns"] == [1, 3] and r["split"] == "ood"
    assert r["settings"]["temperature"] == 1.0 and r["settings"]["seed"] == 5
    assert (tmp_path / "sc.md").read_text() in stdout
    assert not (tmp_path / "sc.png").exists()
    assert "no PNG: matplotlib is not installed" in stdout


@pytest.mark.parametrize("curve, needle", [
    ("0,1,2", "must be >= 1, got 0"),
    ("-2", "must be >= 1, got -2"),
    ("1,two", "'two' is not an integer"),
    ("1.5", "'1.5' is not an integer"),
    ("1,,4", "'' is not an integer"),
    ("", "'' is not an integer"),
    ("2,4,2", "2 is listed twice"),
    ("1,200000", "at most"),
])
def test_eval_bad_curve_values(run_dir, curve, needle):
    rc, _, err = run_main(["eval", "--run", str(run_dir[0]), f"--curve={curve}"])
    assert_clean_error(rc, err, "tinygrad-reason eval: error: --curve:", needle)


def test_eval_curve_and_methods_together_is_an_error(tmp_path):
    # rejected before the run directory is read
    rc, _, err = run_main(["eval", "--run", str(tmp_path / "none"), "--curve", "1,2", "--methods", "greedy"])
    assert_clean_error(rc, err, "--curve and --methods")


def test_sample_streams_the_greedy_completion(run_dir):
    out, _ = run_dir
    q = "Ann has 3 apples and buys 4 more. How many apples does Ann have?"
    rc, stdout, stderr = run_main(["sample", "--run", str(out), "--question", q, "--max-new-tokens", "6"])
    assert rc == 0, stderr
    # what was streamed is exactly the greedy continuation (special tokens not printed, newline at <|step|>)
    from tinygrad_reason.data.formats import parse_completion, prompt_ids
    from tinygrad_reason.data.records import Record
    from tinygrad_reason.generate import SamplingConfig, generate
    _, tok, model, _ = cli.load_run(str(out))
    scfg = SamplingConfig(temperature=0.0, max_new_tokens=6, stop_ids=(tok.eot_id,))
    ids = generate(model, [prompt_ids(Record(q, [], ""), tok, "cot")], scfg).tokens[0]
    text = "".join("\n" if t == tok.step_id else ("" if tok.is_special(t) else tok.decode([t])) for t in ids)
    assert stdout == text + f"\nanswer: {parse_completion(ids, tok, 'cot')}\n"
    assert stdout.splitlines()[-1].startswith("answer: ")


def test_sample_prints_steps_on_lines_and_the_answer(run_dir, monkeypatch):
    from tinygrad_reason import generate as sampling
    _, tok, _, _ = cli.load_run(str(run_dir[0]))
    script = (tok.encode(" 3 + 4 = 7.") + [tok.step_id] + tok.encode(" 7 * 2 = 14.") + [tok.step_id, tok.answer_id]
              + tok.encode(" 14") + [tok.eot_id])
    seen = {}

    def fake_stream(model, prompt, cfg, row_seed=0):
        seen.update(prompt=prompt, cfg=cfg)
        yield from script

    monkeypatch.setattr(sampling, "generate_stream", fake_stream)
    rc, stdout, err = run_main(["sample", "--run", str(run_dir[0]), "--question", "Q?", "--temperature", "0.7",
                                "--top-k", "5", "--top-p", "0.9", "--max-new-tokens", "30", "--seed", "4"])
    assert rc == 0, err
    assert stdout == " 3 + 4 = 7.\n 7 * 2 = 14.\n 14\nanswer: 14\n"
    c = seen["cfg"]
    assert (c.temperature, c.top_k, c.top_p, c.max_new_tokens, c.seed) == (0.7, 5, 0.9, 30, 4)
    assert c.stop_ids == (tok.eot_id,) and seen["prompt"][-1] == tok.think_id


# ------------------------------------------------------------------ compare, with a JSON config
def test_compare_with_a_json_config(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"task": {"n_train": 200, "n_test": 6, "n_ood": 6},
                               "train": {"steps": 99, "eval_every": 2}}))
    out = tmp_path / "cmp"
    over = [s for s in TINY if not s.startswith(("task.n_test", "task.n_ood"))] + ["train.steps=2"]
    rc, stdout, stderr = run_main(["compare", "--config", str(cfg), *sets(over), "--threads", "1",
                                   "--out", str(out)])
    assert rc == 0, stderr
    table = (out / "table.md").read_text()
    assert table in stdout
    assert "| direct | test |" in table and "| chain of thought | ood |" in table
    assert table.count("two-proportion z-test p =") == 2
    res = json.loads((out / "results.json").read_text())
    assert set(res) == {"direct", "cot"}
    for fmt in ("direct", "cot"):
        assert res[fmt]["format"] == fmt and res[fmt]["steps"] == 2 and res[fmt]["test"]["n"] == 6
        assert (out / fmt / "checkpoint" / "checkpoint.json").is_file()
        assert json.loads((out / fmt / "config.json").read_text())["train"]["format"] == fmt


def test_two_proportion_p():
    assert two_proportion_p(5, 10, 5, 10) == pytest.approx(1.0)
    assert two_proportion_p(0, 10, 0, 10) == 1.0
    assert two_proportion_p(90, 100, 10, 100) < 1e-10
    assert two_proportion_p(30, 50, 20, 50) == pytest.approx(0.0455, abs=1e-3)   # z = 2.0
    assert two_proportion_p(1, 0, 1, 2) != two_proportion_p(1, 0, 1, 2)      # nan without data


# ------------------------------------------------------------------ configs
def test_config_files_and_set_overrides(tmp_path):
    j = tmp_path / "a.json"
    j.write_text(json.dumps({"seed": 7, "model": {"d_model": 32, "n_heads": 2},
                             "task": {"knobs": {"max_value": 5}}, "train": {"patience": 3}}))
    cfg = cli.load_config(str(j), ["model.d_model=24", "train.format=direct", "task.knobs.max_steps=4",
                                   "train.lr=1e-4"])
    assert cfg["seed"] == 7 and cfg["model"]["d_model"] == 24 and cfg["model"]["n_heads"] == 2
    assert cfg["train"]["format"] == "direct" and cfg["train"]["patience"] == 3 and cfg["train"]["lr"] == 1e-4
    # knobs given in a file replace the default knobs whole (they constrain each other); --set edits one
    assert cfg["task"]["knobs"] == {"max_steps": 4, "max_value": 5}
    assert cfg["model"]["n_layers"] == cli.DEFAULT_CONFIG["model"]["n_layers"]
    t = tmp_path / "a.toml"
    t.write_text('seed = 7\n[model]\nd_model = 32\n[task.knobs]\nmax_value = 5\n[train]\nformat = "cot"\n')
    cfg = cli.load_config(str(t), ["seed=8"])
    assert cfg["seed"] == 8 and cfg["model"]["d_model"] == 32 and cfg["task"]["knobs"]["max_value"] == 5
    assert cli.DEFAULT_CONFIG["seed"] == 0 and cli.DEFAULT_CONFIG["model"]["d_model"] == 128   # not mutated


# ------------------------------------------------------------------ errors: one line, exit code 2, no traceback
@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", ModuleNotFoundError("No module named 'cupy'"))


@pytest.mark.parametrize("args, needles", [
    (["--set", "train.bogus=1"], ["unknown key 'bogus'"]),
    (["--set", "nosuch.x=1"], ["'nosuch' is not a config section"]),
    (["--set", "train.steps.x=1"], ["'steps' is not a config section"]),
    (["--set", "train.steps"], ["expected section.key=value"]),
    (["--set", "train.format=scratchpad"], ["format must be one of"]),
    (["--set", "model.n_heads=3"], ["model config"]),            # d_model 16 is not divisible by 3
    (["--set", "train.eval_every=0"], ["eval_every"]),
    (["--steps", "0"], ["steps"]),
    (["--set", "tokenizer.vocab_size=100"], ["vocab_size"]),
    (["--set", 'task.knobs={"no_such_knob": 1}'], ["task config"]),
])
def test_bad_options_in_train(tmp_path, args, needles):
    rc, _, err = run_main(["train", *sets(TINY), *args, "--out", str(tmp_path / "r")])
    assert_clean_error(rc, err, "tinygrad-reason train: error:", *needles)


def test_bad_config_files(tmp_path):
    missing = tmp_path / "nope.json"
    rc, _, err = run_main(["train", "--config", str(missing), "--out", str(tmp_path / "r")])
    assert_clean_error(rc, err, "does not exist")
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": {"steps": 3,}}')
    rc, _, err = run_main(["compare", "--config", str(bad), "--out", str(tmp_path / "r")])
    assert_clean_error(rc, err, "tinygrad-reason compare: error:", str(bad))
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[train\nsteps = 3\n")
    rc, _, err = run_main(["train", "--config", str(bad_toml), "--out", str(tmp_path / "r")])
    assert_clean_error(rc, err, str(bad_toml))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[model]\nwidth = 3\n")
    rc, _, err = run_main(["train", "--config", str(unknown), "--out", str(tmp_path / "r")])
    assert_clean_error(rc, err, "unknown config key 'model.width'")
    assert not (tmp_path / "r").exists()          # nothing started


def test_missing_run_directory(tmp_path):
    for cmd in (["eval", "--run", str(tmp_path / "none")],
                ["sample", "--run", str(tmp_path / "none"), "--question", "1 + 1?"]):
        rc, _, err = run_main(cmd)
        assert_clean_error(rc, err, "config.json is missing")
    assert not (tmp_path / "none").exists()


def test_eval_builds_test_and_ood_without_the_train_split():
    cfg = cli.load_config(None, TINY)
    full, held_out = cli.build_splits(cfg), cli.build_splits(cfg, with_train=False)
    assert held_out["train"] == [] and len(full["train"]) == 200
    for split in ("test", "ood"):   # drawn before train, so the same problems either way
        assert [(r.question, r.steps, r.answer) for r in held_out[split]] == \
            [(r.question, r.steps, r.answer) for r in full[split]]


def test_load_run_splits_choice(run_dir):
    assert cli.load_run(str(run_dir[0]), splits="none")[3] is None
    with pytest.raises(ValueError, match="load_run: splits must be 'all', 'eval' or 'none', got 'some'"):
        cli.load_run(str(run_dir[0]), splits="some")


def test_eval_on_the_train_split(run_dir):
    out, _ = run_dir
    rc, stdout, stderr = run_main(["eval", "--run", str(out), "--split", "train", "--n", "2"])
    assert rc == 0, stderr
    assert "| greedy | train |" in stdout and json.loads((out / "eval-train.json").read_text())["n"] == 2


def test_eval_bad_split(run_dir):
    rc, _, err = run_main(["eval", "--run", str(run_dir[0]), "--split", "validation"])
    assert_clean_error(rc, err, "--split must be one of")


def test_argparse_errors_exit_2(tmp_path):
    for argv, needle in ((["train", "--format", "scratchpad", "--out", "x"], "invalid choice"),
                         (["train"], "--out"),
                         (["eval", "--run", "x", "--n", "many"], "invalid int"),
                         (["frobnicate"], "invalid choice"),
                         ([], "required")):
        rc, _, err = run_main(argv)
        assert rc == 2 and needle in err and "Traceback" not in err, (argv, err)


def test_cuda_without_cupy_is_a_clean_error(tmp_path, no_cupy):
    rc, _, err = run_main(["train", *sets(TINY), "--device", "cuda", "--out", str(tmp_path / "r")])
    assert_clean_error(rc, err, "CuPy")
    rc, _, err = run_main(["train", *sets(TINY), "--set", "device=tpu", "--out", str(tmp_path / "r")])
    assert_clean_error(rc, err, "unknown device 'tpu'")
    assert not (tmp_path / "r").exists()


def test_subprocess_error_and_help(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "tinygrad_reason.cli", "eval", "--run", str(tmp_path / "none")],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    assert p.stderr.strip().startswith("tinygrad-reason eval: error:") and len(p.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ help and the console script
OPTIONS = {
    "train": ["--config", "--set", "--seed", "--device", "--steps", "--threads", "--format", "--out"],
    "eval": ["--run", "--split", "--n", "--out", "--methods", "--curve", "--temperature", "--seed", "--threads",
             "--orm", "--prm", "--search-expand", "--search-beam"],
    "sample": ["--run", "--question", "--temperature", "--top-k", "--top-p", "--max-new-tokens", "--seed",
               "--model", "--chat", "--system"],
    "compare": ["--config", "--set", "--seed", "--device", "--steps", "--threads", "--out"],
}


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_help_mentions_every_option(command):
    rc, stdout, _ = run_main([command, "--help"])
    assert rc == 0
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command").choices[command]
    declared = {s for a in sub._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    assert declared == set(OPTIONS[command])
    for opt in OPTIONS[command]:
        assert opt in stdout, (command, opt)


def test_top_level_help_lists_commands():
    rc, stdout, _ = run_main(["--help"])
    assert rc == 0
    for command in OPTIONS:
        assert command in stdout


def test_console_script_entry_point():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts["tinygrad-reason"] == "tinygrad_reason.cli:main"
    module, func = scripts["tinygrad-reason"].split(":")
    assert module == cli.__name__ and callable(getattr(cli, func))


def test_train_and_eval_with_step_attention(tmp_path):
    """model.step_attention reaches the model with the run tokenizer's special ids, and the run loads back."""
    out = tmp_path / "run"
    rc, _, err = run_main(["train", *sets(TINY), "--set", "model.step_attention=mask", "--format", "cot",
                           "--threads", "1", "--out", str(out)])
    assert rc == 0, err
    assert json.loads((out / "config.json").read_text())["model"]["step_attention"] == "mask"
    _, tok, model, _ = cli.load_run(str(out), splits="none")
    assert model.cfg.step_attention == "mask" and model.cfg.step_ids["step"] == tok.step_id
    assert model.cfg.step_ids["think"] == tok.think_id and model.cfg.step_ids["markers"]   # ">>" is a token
    rc, stdout, err = run_main(["eval", "--run", str(out), "--n", "3"])
    assert rc == 0 and "| greedy | test |" in stdout, err
    rc, _, err = run_main(["train", *sets(TINY), "--set", "model.step_ids={}", "--out", str(tmp_path / "x")])
    assert_clean_error(rc, err, "unknown key 'step_ids'")
