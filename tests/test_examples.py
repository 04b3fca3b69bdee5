"""The examples run as a newcomer would run them: a fresh Python process, from any directory."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name, *args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_backprop_by_hand_runs_and_writes_dot(tmp_path):
    out = tmp_path / "graph.dot"
    run = run_example("01_backprop_by_hand.py", "--out", str(out), cwd=tmp_path)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    text = run.stdout

    dot = out.read_text()
    assert dot.startswith("digraph")
    assert dot.rstrip().endswith("}")
    for name in ("W1", "b1", "W2", "b2", "loss", "Tanh", "MatMul"):
        assert name in dot, f"{name} missing from the DOT graph"
    assert "grad -}" not in dot.split("W1")[1].split("\n")[0]   # W1's record shows a gradient
    assert not (tmp_path / "backprop.dot").exists()             # --out was honoured

    # the walk, node by node, from the loss down to the parameters
    assert "loss (Mul): incoming grad 1" in text
    assert re.search(r"^W1 \(leaf\): incoming grad", text, re.M)
    assert "    -> b2: passes" in text
    # the side-by-side table: one row per parameter and checked intermediate, all tiny differences
    assert "all gradients match the chain rule by hand" in text
    for name in ("W1", "b1", "W2", "b2", "z1", "h", "yhat"):
        row = re.search(rf"^{name}\s+\(.*\s(\d\.\de[+-]\d\d)$", text, re.M)
        assert row, f"no table row for {name}"
        assert float(row.group(1)) < 1e-12
    assert "wrote the graph" in text and str(out) in text
    assert f"dot -Tpng {out} -o" in text
    # SGD lowers the loss
    losses = [float(v) for v in re.findall(r"^step \d+: loss ([0-9.]+)$", text, re.M)]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    assert "loss fell from" in text


def test_backprop_by_hand_default_out_is_cwd(tmp_path):
    run = run_example("01_backprop_by_hand.py", "--steps", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "backprop.dot").read_text().startswith("digraph")
    assert "dot -Tpng backprop.dot -o backprop.png" in run.stdout


def test_train_tiny_gpt_runs_and_the_loss_falls(tmp_path):
    run = run_example("02_train_tiny_gpt.py", "--steps", "30", "--sample-chars", "20", cwd=tmp_path)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    first, last = map(float, re.search(r"^loss (\d+\.\d+) -> (\d+\.\d+)", run.stdout, re.M).groups())
    assert last < first - 0.3, run.stdout
    assert re.search(r"^sample: It was the ", run.stdout, re.M)


def test_cot_vs_direct_quick_writes_the_table(tmp_path):
    run = run_example("03_cot_vs_direct.py", "--quick", "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    table = (tmp_path / "cmp" / "table.md").read_text()
    for row in ("| direct | test |", "| direct | ood |", "| chain of thought | test |", "| chain of thought | ood |"):
        assert row in table
    assert "two-proportion z-test p =" in table and table in run.stdout


def test_verifiers_quick_runs_the_whole_pipeline(tmp_path):
    run = run_example("04_verifiers.py", "--quick", "--out", str(tmp_path / "v"), cwd=tmp_path)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    table = (tmp_path / "v" / "curve.md").read_text()
    assert "18 sampled solutions" in run.stdout and "orm: held-out AUROC" in run.stdout and "prm:" in run.stdout
    assert table.startswith("| N | majority vote | best-of-N, exact step checker | best-of-N, ORM |")
    assert table.count("\n") == 4
    assert (tmp_path / "v" / "cot" / "checkpoint" / "checkpoint.json").exists()


def test_grpo_quick_runs_the_whole_pipeline(tmp_path):
    run = run_example("05_grpo.py", "--quick", "--out", str(tmp_path / "g"), cwd=tmp_path)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert re.search(r"before GRPO: [0-9.]+% \(\d+/8", run.stdout) and re.search(r"after GRPO: [0-9.]+% \(\d+/8",
                                                                                  run.stdout)
    assert "two-proportion p =" in run.stdout
    rows = (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "train"' in r for r in rows) == 3 and '"kind": "eval"' in rows[-1]


def test_smollm2_example_chats_and_solves(tmp_path, smollm2_gguf):
    run = run_example("06_smollm2.py", "--model", smollm2_gguf, "--problems", "1", "--max-new-tokens", "24",
                      "--chat", "Say hello.", cwd=tmp_path)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert re.search(r"^loaded .* 30 layers, d 576, 9 heads / 3 KV heads, vocab 49152, 134,515,008 parameters",
                     run.stdout, re.M), run.stdout
    probs = [float(p) for p in re.findall(r"  p = ([0-9.]+)  log p", run.stdout)]
    assert probs and all(0 < p <= 1 for p in probs)
    assert "== greedy: " in run.stdout and "== tool: " in run.stdout
    assert re.search(r"answer \S+ \(reference 10\) (right|wrong)", run.stdout)


def test_moe_and_mla_example_shows_routing_losses_and_the_latent_cache(tmp_path):
    run = run_example("07_moe_and_mla.py", cwd=tmp_path)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    routed = re.findall(r"token \d \(id +\d+\) -> expert (\d) x ([0-9.]+), expert (\d) x ([0-9.]+)", run.stdout)
    assert len(routed) == 6
    for e1, g1, e2, g2 in routed:         # two different experts, renormalized gates, larger first
        assert e1 != e2 and abs(float(g1) + float(g2) - 1) < 2e-3 and float(g1) >= float(g2)
    counts = re.search(r"tokens per expert in this row: \[(.*)\]", run.stdout).group(1)
    assert sum(int(c) for c in counts.split(",")) == 2 * 12
    assert re.search(r"loss parts: cross_entropy [0-9.]+, load_balancing [0-9.]+, router_z [0-9.]+", run.stdout)
    assert re.search(r"cache per token and layer: MLA 48 bytes .* multi-head attention 256 bytes", run.stdout)
    diff = float(re.search(r"max \|logit difference\| ([0-9.e+-]+)", run.stdout).group(1))
    assert diff < 1e-5
