"""The staged pipeline end to end on a micro config (seconds): the report's structure, the stage
cache, --from, a changed config, an interrupted stage resuming, the spread over seeds, and the
statistics every row uses against known values."""
import json
import math
import os
import shutil

import pytest

from tinygrad_reason.cli import main
from tinygrad_reason.cli.pipeline import STAGES, first_changed_stage, pipeline_config
from tinygrad_reason.cli.pipeline_report import ROWS, spread, write_spread
from tinygrad_reason.train.stats import mcnemar_p, two_proportion_p, wilson_interval

MICRO = {
    "task": {"n_train": 300, "n_test": 20, "n_ood": 20},
    "tokenizer": {"vocab_size": 1000},
    "model": {"d_model": 32, "n_layers": 1, "n_heads": 2},
    "train": {"steps": 5, "eval_every": 5, "eval_size": 10, "warmup": 1, "max_new_tokens": 40},
    "pipeline": {"direct_steps": 4, "label_problems": 10, "label_samples": 2, "prm_steps": 3, "grpo_steps": 2,
                 "grpo_prompts": 2, "paths": 2, "refine_rounds": 1, "grpo_eval_every": 2},
}


def _pipeline(out, config, *extra):
    return main(["pipeline", "--out", str(out), "--config", str(config), "--threads", "1", *extra])


def _mtime(path):
    return os.stat(path).st_mtime_ns


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    config = root / "micro.json"
    config.write_text(json.dumps(MICRO))
    out = root / "run"
    assert _pipeline(out, config) == 0
    return out, config


def _copy(finished, tmp_path):
    out, config = finished
    dest = tmp_path / "run"
    shutil.copytree(out, dest)
    return dest, config


def test_report_structure(finished, capsys):
    out, _ = finished
    for stage in STAGES:
        assert (out / "stages" / f"{stage}.json").exists(), stage
    for name in ("table.md", "results.json", "pipeline.json"):
        assert (out / name).exists(), name
    report = json.loads((out / "results.json").read_text())
    labels = [r[0] for r in ROWS]
    assert labels == ["1", "2", "3", "4", "5", "6a", "6b", "7", "8a", "8b"]
    for split, n in (("test", 20), ("ood", 20)):
        rows = report["rows"][split]
        assert [r["row"] for r in rows] == labels
        by = {r["row"]: r for r in rows}
        for r in rows:
            assert r["n"] == n and 0 <= r["correct"] <= n
            assert r["accuracy"] == pytest.approx(r["correct"] / n)
            lo, hi = wilson_interval(r["correct"], n)
            assert r["ci95"] == pytest.approx([lo, hi])
            assert r["test_tokens"] > 0 and r["parameters"] > 0 and r["train_steps"] > 0
            if r["row"] == "1":
                assert r["builds_on_row"] is None and "gain" not in r
                continue
            b = by[r["builds_on_row"]]
            assert r["gain"] == pytest.approx(r["accuracy"] - b["accuracy"])
            assert r["p_two_proportion"] == pytest.approx(two_proportion_p(r["correct"], n, b["correct"], n))
            assert r["significant"] == (r["gain"] > 0 and r["p_two_proportion"] < 0.05)
        # what each row builds on, as the issue lists them
        assert [by[k]["builds_on_row"] for k in ("2", "3", "4", "5", "6a", "6b", "7", "8a", "8b")] == \
            ["1", "2", "2", "2", "3", "3", "2", "7", "7"]
        # the verifier rows count the PRM's parameters too; steps add up along the chain
        assert by["6a"]["parameters"] > by["3"]["parameters"] == by["2"]["parameters"]
        assert by["1"]["train_steps"] == 4 and by["2"]["train_steps"] == 5
        assert by["6a"]["train_steps"] == 5 + 3 and by["7"]["train_steps"] == 5 + 2
        assert by["8a"]["train_steps"] == 5 + 2 + 3
        # self-consistency and the verifier rows choose among the same sampled paths
        assert by["3"]["test_tokens"] == by["6a"]["test_tokens"] == by["6b"]["test_tokens"]
        assert by["3"]["correct"] <= by["3"]["pass_at_n"]
    table = (out / "table.md").read_text()
    assert "### test" in table and "### ood" in table
    assert "| 6a | + verifier: best-of-2 by the PRM |" in table and "| 8b | + GRPO + PRM-weighted vote@2 |" in table
    # the stages are the documented commands' run directories
    assert (out / "cot" / "checkpoint" / "checkpoint.json").exists()
    assert json.loads((out / "grpo" / "rl.json").read_text())["run"] == os.path.abspath(out / "cot")
    assert (out / "labels.jsonl").exists() and (out / "prm" / "verifier.json").exists()


def test_rerun_skips_finished_stages(finished, tmp_path, capsys):
    out, config = _copy(finished, tmp_path)
    before = {s: _mtime(out / "stages" / f"{s}.json") for s in STAGES}
    ckpt = _mtime(out / "cot" / "checkpoint" / "checkpoint.json")
    capsys.readouterr()
    assert _pipeline(out, config) == 0
    err = capsys.readouterr().err
    for i, stage in enumerate(STAGES[:-1], 1):
        assert f"[stage {i}/{len(STAGES)}] {stage}: cached" in err
        assert _mtime(out / "stages" / f"{stage}.json") == before[stage]
    assert _mtime(out / "cot" / "checkpoint" / "checkpoint.json") == ckpt
    assert "report: starting" in err     # the report is always rewritten (cheap)


def test_from_redoes_the_stage_and_those_after(finished, tmp_path, capsys):
    out, config = _copy(finished, tmp_path)
    before = {s: _mtime(out / "stages" / f"{s}.json") for s in STAGES}
    old_rl_metrics = (out / "grpo" / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert _pipeline(out, config, "--from", "grpo") == 0
    err = capsys.readouterr().err
    for stage in STAGES[:5]:
        assert _mtime(out / "stages" / f"{stage}.json") == before[stage]
        assert f"{stage}: cached" in err
    for stage in ("grpo", "eval-grpo", "report"):
        assert _mtime(out / "stages" / f"{stage}.json") != before[stage]
        assert f"{stage}: starting" in err
    # GRPO trained afresh (its directory was removed), not resumed: same seed, same metrics
    assert (out / "grpo" / "metrics.jsonl").read_text().count('"step"') == old_rl_metrics.count('"step"')


def test_changed_config_redoes_from_the_first_stage_it_reaches(finished, tmp_path, capsys):
    out, config = _copy(finished, tmp_path)
    before = {s: _mtime(out / "stages" / f"{s}.json") for s in STAGES}
    capsys.readouterr()
    assert _pipeline(out, config, "--set", "pipeline.paths=3") == 0
    err = capsys.readouterr().err
    assert "config changed" in err and "pipeline.paths" in err and "redoing from eval-sft" in err
    for stage in ("direct", "cot", "labels", "prm"):
        assert _mtime(out / "stages" / f"{stage}.json") == before[stage]
    for stage in ("eval-sft", "grpo", "eval-grpo"):
        assert _mtime(out / "stages" / f"{stage}.json") != before[stage]
    report = json.loads((out / "results.json").read_text())
    assert report["rows"]["test"][2]["stage"] == "+ self-consistency@3"


def test_first_changed_stage():
    a = pipeline_config(quick=True)
    assert first_changed_stage(a, a) == (None, [])
    b = json.loads(json.dumps(a))
    b["pipeline"]["grpo_steps"] += 1
    assert first_changed_stage(a, b) == ("grpo", ["pipeline.grpo_steps"])
    b["pipeline"]["label_samples"] += 1
    assert first_changed_stage(a, b)[0] == "labels"
    b["model"]["d_model"] = 64
    assert first_changed_stage(a, b)[0] == "direct"
    c = json.loads(json.dumps(a))
    c["threads"] = 7                         # how fast, not what: nothing is redone
    assert first_changed_stage(a, c) == (None, [])


def test_interrupted_stage_resumes_from_its_checkpoint(finished, tmp_path, capsys):
    """A GRPO stage stopped after its checkpoint but before its record: the re-run resumes the
    checkpoint (no step is trained twice) and finishes the stages after it. (A run of its own: a
    copied directory would hold a GRPO checkpoint of the original's cot run.)"""
    config = finished[1]
    out = tmp_path / "run"
    assert _pipeline(out, config) == 0
    for stage in ("grpo", "eval-grpo", "report"):
        os.remove(out / "stages" / f"{stage}.json")
    steps_before = (out / "grpo" / "metrics.jsonl").read_text().count('"kind": "train"')
    capsys.readouterr()
    assert _pipeline(out, config) == 0
    err = capsys.readouterr().err
    assert "grpo: starting" in err and "cot: cached" in err
    assert (out / "grpo" / "metrics.jsonl").read_text().count('"kind": "train"') == steps_before
    assert json.loads((out / "stages" / "grpo.json").read_text())["steps"] == 2


def test_bad_options(finished, tmp_path, capsys):
    out, config = finished
    assert _pipeline(tmp_path / "x", config, "--from", "nonsense") == 2
    assert "--from must be one of" in capsys.readouterr().err
    assert _pipeline(tmp_path / "x", config, "--set", "pipeline.paths=0") == 2
    assert "pipeline.paths must be an integer >= 1" in capsys.readouterr().err
    assert _pipeline(tmp_path / "x", config, "--set", "pipeline.nope=1") == 2
    assert "unknown key 'nope'" in capsys.readouterr().err
    assert _pipeline(tmp_path / "x", config, "--seeds", "1,1") == 2
    assert "distinct seeds" in capsys.readouterr().err


def test_spread_over_seeds(finished, tmp_path):
    out, _ = finished
    report = json.loads((out / "results.json").read_text())
    other = json.loads(json.dumps(report))
    for split in ("test", "ood"):
        for r in other["rows"][split]:
            r["accuracy"] = min(1.0, r["accuracy"] + 0.1)
            r["significant"] = True
    s = spread([report, other])
    assert s["seeds"] == 2
    for split in ("test", "ood"):
        for mine, a, b in zip(s["rows"][split], report["rows"][split], other["rows"][split]):
            assert mine["mean"] == pytest.approx((a["accuracy"] + b["accuracy"]) / 2)
            assert mine["min"] == min(a["accuracy"], b["accuracy"]) and mine["max"] == max(a["accuracy"], b["accuracy"])
            if "gain" in a:
                assert mine["significant_seeds"] == int(bool(a["significant"])) + 1
    for k, rep in enumerate((report, other)):
        (tmp_path / f"seed-{k}").mkdir()
        (tmp_path / f"seed-{k}" / "results.json").write_text(json.dumps(rep))
    text = write_spread([str(tmp_path / "seed-0"), str(tmp_path / "seed-1")], str(tmp_path))
    assert "### test, 2 seeds" in text and (tmp_path / "spread.json").exists()


def test_statistics_against_known_values():
    # Wilson 95% interval of 8/10: centre (0.8 + 1.96^2/20) / (1 + 1.96^2/10)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    # 60/100 against 40/100: pooled p 0.5, z = 0.2 / sqrt(0.25 * 0.02) = 2.828, two-sided p = 0.00468
    assert two_proportion_p(60, 100, 40, 100) == pytest.approx(0.004678, abs=1e-6)
    assert two_proportion_p(3, 10, 3, 10) == pytest.approx(1.0)
    # McNemar: 10 discordant pairs all one way, p = 2 / 2^10
    assert mcnemar_p([True] * 10 + [False] * 5, [False] * 10 + [False] * 5) == pytest.approx(2 / 1024)
    assert mcnemar_p([True, False], [False, True]) == 1.0
