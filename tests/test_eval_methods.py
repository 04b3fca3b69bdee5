"""Evaluation methods (reasoning/methods.py) and `tinygrad-reason eval --methods`."""
import json

import pytest

from test_cli import TINY, assert_clean_error, run_main, sets
from tinygrad_reason.reasoning.methods import MethodSpec, methods_table, parse_methods


def test_parse_methods():
    specs = parse_methods("greedy, sc@8,tool,refine@2,refine@0")
    assert specs == [MethodSpec("greedy"), MethodSpec("sc", 8), MethodSpec("tool"), MethodSpec("refine", 2),
                     MethodSpec("refine", 0)]
    assert [s.name for s in specs] == ["greedy", "sc@8", "tool", "refine@2", "refine@0"]
    for bad, needle in (("beam", "unknown method 'beam'"), ("sc@", "unknown method"), ("sc@0", "N >= 1"),
                        ("greedy,,tool", "unknown method ''"), ("sc@x", "unknown method"),
                        ("greedy,greedy", "listed twice"), ("refine@-1", "unknown method")):
        with pytest.raises(ValueError, match=needle):
            parse_methods(bad)


def test_methods_table():
    rows = [{"method": "sc@8", "accuracy": 0.5, "n": 4, "ci95": [0.15, 0.85], "generated_tokens": 99,
             "seconds": 1.25}]
    t = methods_table(rows, "ood").splitlines()
    assert t[0] == "| method | split | accuracy | n | 95% CI | tokens | seconds |"
    assert t[2] == "| sc@8 | ood | 50.0% | 4 | [15.0%, 85.0%] | 99 | 1.2 |"


@pytest.mark.parametrize("methods", ["greedy,beam", "sc@0", "tool,tool"])
def test_bad_method_names_are_a_one_line_error(tmp_path, methods):
    rc, _, err = run_main(["eval", "--run", str(tmp_path / "nothing"), "--methods", methods])
    assert_clean_error(rc, err, "tinygrad-reason eval: error: --methods:")
    assert not (tmp_path / "nothing").exists()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("methods") / "run"
    rc, _, err = run_main(["train", *sets(TINY), "--set", "train.steps=2", "--format", "cot", "--threads", "1",
                           "--out", str(out)])
    assert rc == 0, err
    return out


def test_eval_methods_writes_the_table_and_json(run_dir):
    rc, stdout, err = run_main(["eval", "--run", str(run_dir), "--split", "ood", "--n", "2",
                                "--methods", "greedy,sc@2,tool,refine@1", "--temperature", "0.9", "--seed", "3"])
    assert rc == 0, err
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("| method | split | accuracy | n | 95% CI | tokens | seconds |")
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["greedy", "sc@2", "tool", "refine@1"]
    assert all("| ood |" in ln and "| 2 |" in ln for ln in lines[2:])
    md = (run_dir / "eval-methods-ood.md").read_text()
    assert md.strip() == stdout.strip()
    res = json.loads((run_dir / "eval-methods-ood.json").read_text())
    assert res["split"] == "ood" and res["n"] == 2 and res["format"] == "cot"
    assert res["settings"]["temperature"] == 0.9 and res["settings"]["seed"] == 3
    rows = {r["method"]: r for r in res["results"]}
    for r in rows.values():
        assert r["n"] == 2 and 0 <= r["accuracy"] <= 1 and r["correct"] == round(r["accuracy"] * 2)
        lo, hi = r["ci95"]
        assert 0 <= lo <= r["accuracy"] <= hi <= 1
        assert r["generated_tokens"] > 0 and r["seconds"] >= 0
    max_new = json.loads((run_dir / "config.json").read_text())["train"]["max_new_tokens"]
    assert rows["sc@2"]["generated_tokens"] <= 2 * 2 * max_new
    assert "tool_fired" in rows["tool"] and "revisions_kept" in rows["refine@1"]
    # greedy through --methods is the plain eval's greedy
    rc, _, err = run_main(["eval", "--run", str(run_dir), "--split", "ood", "--n", "2"])
    assert rc == 0, err
    plain = json.loads((run_dir / "eval-ood.json").read_text())
    assert (plain["correct"], plain["generated_tokens"]) == (rows["greedy"]["correct"], rows["greedy"]["generated_tokens"])


def test_eval_methods_custom_out_and_refine_needs_cot(run_dir, tmp_path):
    out = tmp_path / "m.json"
    rc, stdout, err = run_main(["eval", "--run", str(run_dir), "--n", "1", "--methods", "greedy", "--out", str(out)])
    assert rc == 0, err
    assert json.loads(out.read_text())["results"][0]["method"] == "greedy"
    assert (tmp_path / "m.md").read_text() in stdout
    direct = tmp_path / "direct"
    import shutil
    shutil.copytree(run_dir, direct)
    cfg = json.loads((direct / "config.json").read_text())
    cfg["train"]["format"] = "direct"
    (direct / "config.json").write_text(json.dumps(cfg))
    rc, _, err = run_main(["eval", "--run", str(direct), "--n", "1", "--methods", "refine@1"])
    assert_clean_error(rc, err, "chain-of-thought")
