"""`tinygrad-reason verifier label|train|eval` and the verifier methods of `eval`, on a tiny run:
files written, tables printed, bad input as one-line errors, every option in --help."""
import json
import os

import pytest

from test_cli import TINY, assert_clean_error, run_main, sets
from tinygrad_reason import cli

TINY_COT = [s for s in TINY if not s.startswith("train.max_new_tokens")] + ["train.max_new_tokens=24"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("verifier-cli")
    out = d / "run"
    rc, _, err = run_main(["train", *sets(TINY_COT), "--format", "cot", "--threads", "1", "--out", str(out)])
    assert rc == 0, err
    return d, out


@pytest.fixture(scope="module")
def labelled(run_dir):
    d, run = run_dir
    labels = d / "labels.jsonl"
    rc, out, err = run_main(["verifier", "label", "--run", str(run), "--out", str(labels), "--problems", "6",
                             "--samples", "3", "--mc", "2", "--threads", "1"])
    assert rc == 0, err
    assert "18 solutions of 6 problems" in out and "Monte-Carlo vs exact step labels, hard" in out
    return labels


@pytest.fixture(scope="module")
def verifiers(run_dir, labelled):
    d, run = run_dir
    dirs = {}
    for kind, extra in (("orm", ["--trunk", "frozen", "--targets", "last"]),
                        ("prm", ["--labels-source", "mc", "--lm-weight", "0.5", "--head-hidden", "8"])):
        vdir = d / kind
        rc, out, err = run_main(["verifier", "train", "--run", str(run), "--labels", str(labelled), "--out", str(vdir),
                                 "--kind", kind, "--steps", "3", "--eval-every", "3", "--batch-size", "4",
                                 "--held-out", "0.3", "--threads", "1", *extra])
        assert rc == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["kind"] == kind and summary["steps"] == 3 and summary["held_out_solutions"] == 6
        for name in ("verifier.json", "results.json", "metrics.jsonl", os.path.join("checkpoint", "checkpoint.json")):
            assert (vdir / name).exists(), name
        dirs[kind] = vdir
    return dirs


def test_label_file_holds_every_solution(labelled):
    from tinygrad_reason.reasoning.verifier_data import load_labels
    meta, sols = load_labels(labelled)
    assert meta["samples"] == 3 and meta["problems"] == 6 and meta["mc_k"] == 2 and len(sols) == 18
    assert all(s.mc_k == 2 and len(s.mc_values) == len(s.step_ends) for s in sols)


def test_verifier_eval_writes_the_curve(run_dir, verifiers, tmp_path):
    _, run = run_dir
    out = tmp_path / "curve.json"
    rc, stdout, err = run_main(["verifier", "eval", "--run", str(run), "--orm", str(verifiers["orm"]),
                                "--prm", str(verifiers["prm"]), "--n", "4", "--curve", "1,2", "--threads", "1",
                                "--out", str(out)])
    assert rc == 0, err
    data = json.loads(out.read_text())
    assert data["ns"] == [1, 2] and set(data["methods"]) == {"majority", "checker", "orm", "wvote-orm", "prm-min", "prm-prod",
                                                             "wvote-prm"}
    assert len(data["samples"]) == 4 * 2 and set(data["calibration"]) == {"orm", "prm_min"}
    assert "| N | majority vote |" in stdout and "AUROC" in stdout and "greedy decoding" in stdout
    assert (tmp_path / "curve.md").exists()
    for png in ("curve.png", "curve-reliability.png"):                 # matplotlib is in the test extra
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_eval_methods_with_verifiers(run_dir, verifiers, tmp_path):
    _, run = run_dir
    out = tmp_path / "methods.json"
    rc, stdout, err = run_main(["eval", "--run", str(run), "--methods", "sc@2,bon@2:orm,bon@2:prm,wvote@2,search:prm",
                                "--orm", str(verifiers["orm"]), "--prm", str(verifiers["prm"]), "--n", "3",
                                "--search-expand", "2", "--search-beam", "1", "--threads", "1", "--out", str(out)])
    assert rc == 0, err
    rows = {r["method"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"sc@2", "bon@2:orm", "bon@2:prm", "wvote@2", "search:prm"}
    assert rows["sc@2"]["generated_tokens"] == rows["bon@2:orm"]["generated_tokens"]   # the same sampled paths
    assert rows["search:prm"]["expand"] == 2 and "| bon@2:prm | test |" in stdout


def test_bad_verifier_input_is_one_line(run_dir, labelled, tmp_path):
    _, run = run_dir
    rc, _, err = run_main(["eval", "--run", str(run), "--methods", "bon@4:prm", "--n", "2"])
    assert_clean_error(rc, err, "needs --prm DIR")
    rc, _, err = run_main(["verifier", "eval", "--run", str(run), "--n", "2"])
    assert_clean_error(rc, err, "give --orm DIR, --prm DIR or both")
    rc, _, err = run_main(["verifier", "eval", "--run", str(run), "--orm", str(tmp_path / "none")])
    assert_clean_error(rc, err, "verifier.json or checkpoint/ is missing")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(labelled.read_text().replace('"version": 2', '"version": 9', 1))
    rc, _, err = run_main(["verifier", "train", "--run", str(run), "--labels", str(bad), "--out", str(tmp_path / "v")])
    assert_clean_error(rc, err, "label file version 9", "bad.jsonl")
    rc, _, err = run_main(["verifier", "label", "--run", str(run), "--out", str(tmp_path / "l"), "--temperature", "0"])
    assert_clean_error(rc, err, "--temperature must be > 0")
    rc, _, err = run_main(["verifier", "train", "--run", str(run), "--labels", str(labelled), "--out",
                           str(tmp_path / "v"), "--trunk", "frozen", "--lm-weight", "1"])
    assert_clean_error(rc, err, "lm_weight needs a trunk that trains")


OPTIONS = {
    "label": ["--run", "--split", "--temperature", "--top-p", "--seed", "--rows-per-call", "--threads", "--out",
              "--problems", "--samples", "--mc"],
    "train": ["--run", "--labels", "--out", "--kind", "--targets", "--labels-source", "--trunk", "--head-hidden",
              "--lm-weight", "--balance", "--steps", "--batch-size", "--lr", "--eval-every", "--held-out", "--seed",
              "--threads"],
    "eval": ["--run", "--split", "--temperature", "--top-p", "--seed", "--rows-per-call", "--threads", "--orm", "--prm",
             "--n", "--curve", "--out"],
}


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_help_mentions_every_option(command):
    rc, stdout, _ = run_main(["verifier", command, "--help"])
    assert rc == 0
    top = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["verifier"]
    sub = next(a for a in top._actions if a.dest == "verifier_command").choices[command]
    declared = {s for a in sub._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    assert declared == set(OPTIONS[command])
    for opt in OPTIONS[command]:
        assert opt in stdout, (command, opt)
