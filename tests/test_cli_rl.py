"""`tinygrad-reason rl` on a tiny run: the output is a run directory (eval reads it), results carry the
policy run's accuracy and a p-value, a rerun resumes, changed options are refused, bad input is one
line, and --help lists every GRPOConfig field."""
import dataclasses
import json

import pytest

from test_cli import TINY, assert_clean_error, run_main, sets
from tinygrad_reason import cli
from tinygrad_reason.train.grpo import GRPOConfig

TINY_COT = [s for s in TINY if not s.startswith("train.max_new_tokens")] + ["train.max_new_tokens=16"]
RL = ["--steps", "2", "--prompts-per-step", "2", "--num-generations", "3", "--eval-every", "2", "--eval-size", "2",
      "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("rl-cli")
    out = d / "run"
    rc, _, err = run_main(["train", *sets(TINY_COT), "--format", "cot", "--threads", "1", "--out", str(out)])
    assert rc == 0, err
    return d, out


def test_rl_writes_a_run_directory_and_resumes(run_dir):
    d, run = run_dir
    out = d / "grpo"
    rc, stdout, err = run_main(["rl", "--run", str(run), "--out", str(out), *RL, "--loss-type", "dr_grpo",
                                "--beta", "0.04", "--rewards", "correctness,format", "--reward-weights", "1,0.5"])
    assert rc == 0, err
    results = json.loads((out / "results.json").read_text())
    for split in ("test", "ood"):
        r = results[split]
        assert r["n"] == 10 and 0 <= r["p_value"] <= 1 and r["policy_run"]["n"] == 10
        assert r["gain"] == pytest.approx(r["accuracy"] - r["policy_run"]["accuracy"])
        assert f"{split}: accuracy" in stdout
    saved = json.loads((out / "rl.json").read_text())
    assert saved["config"]["loss_type"] == "dr_grpo" and saved["config"]["reward_weights"] == [1.0, 0.5]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "rewards/format/mean" in rows[0] and "kl" in rows[0]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"      # reward, accuracy, lengths, clip
    # the output is a run directory: eval reads it like a train run
    rc, stdout, err = run_main(["eval", "--run", str(out), "--n", "3", "--threads", "1"])
    assert rc == 0, err
    # a rerun with more steps resumes from the checkpoint
    more = [a if a != "2" or i != 1 else "4" for i, a in enumerate(RL)]
    rc, _, err = run_main(["rl", "--run", str(run), "--out", str(out), *more, "--loss-type", "dr_grpo",
                           "--beta", "0.04", "--rewards", "correctness,format", "--reward-weights", "1,0.5"])
    assert rc == 0, err
    assert json.loads((out / "results.json").read_text())["steps"] == 4
    # other options on the same checkpoint are refused
    rc, _, err = run_main(["rl", "--run", str(run), "--out", str(out), *RL, "--loss-type", "grpo"])
    assert_clean_error(rc, err, "other options", "loss_type")


def test_bad_rl_input_is_one_line(run_dir, tmp_path):
    _, run = run_dir
    rc, _, err = run_main(["rl", "--run", str(run), "--out", str(tmp_path / "g"), "--num-generations", "1"])
    assert_clean_error(rc, err, "num_generations must be >= 2")
    rc, _, err = run_main(["rl", "--run", str(run), "--out", str(tmp_path / "g"), "--loss-type", "ppo"])
    assert_clean_error(rc, err, "loss_type must be one of")
    rc, _, err = run_main(["rl", "--run", str(tmp_path / "none"), "--out", str(tmp_path / "g")])
    assert_clean_error(rc, err, "config.json is missing")
    rc, _, err = run_main(["rl", "--run", str(run), "--out", str(run)])
    assert_clean_error(rc, err, "--out must be a new directory")


def test_help_lists_every_config_field():
    rc, stdout, _ = run_main(["rl", "--help"])
    assert rc == 0
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["rl"]
    declared = {s for a in sub._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    fields = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(GRPOConfig)
              if f.name not in ("checkpoint_dir", "log_path", "plot_path", "progress")}
    with_model = {"--model", "--task", "--knob", "--train-size", "--test-size", "--ood-size", "--ood-mode",
                  "--data-seed", "--train-layers"}      # rl --model (cli/rl_model.py)
    assert declared == fields | {"--run", "--out", "--threads", "--quiet"} | with_model
    for opt in declared:
        assert opt in stdout, opt
