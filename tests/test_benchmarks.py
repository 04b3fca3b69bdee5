"""Smoke runs of the benchmark scripts on the tiny config: they run, print the fields the READMEs
quote, and both sides agree where the script checks it. (Timings are never asserted: benchmarks,
not tests, judge speed.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tinygrad_reason.fast import allocator

pytest.importorskip("torch")

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")


def _run(script: str, *args: str) -> list[dict]:
    out = subprocess.run([sys.executable, os.path.join(BENCH, script), *args], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_bench_train_tiny_with_gemm_floor_and_hand_step():
    (row,) = _run("bench_train.py", "--configs", "tiny", "--steps", "1", "--warmup", "0", "--threads", "1",
                  "--no-memory", "--gemm-floor", "--hand")
    for key in ("final_loss_ours", "final_loss_hand"):
        assert row[key] == pytest.approx(row["final_loss_torch"], rel=1e-4), key
    for key in ("ours_ms", "torch_ms", "ratio", "linear_gemms_numpy_ms", "linear_gemms_torch_ms", "ours_rest_ms",
                "hand_ms", "ratio_hand", "ours_over_hand"):
        assert row[key] > 0, key
    assert {"linear", "attention", "gelu", "layernorm", "adamw"} <= set(row["hand_parts_ms"])


def test_bench_train_tiny_both_parallel_modes():
    (row,) = _run("bench_train.py", "--configs", "tiny", "--steps", "1", "--warmup", "0", "--threads", "2",
                  "--no-memory")
    assert row["ours_parallel"] == "ops"
    for key in ("final_loss_ours", "final_loss_ours_data_parallel"):   # same weights, same batch, same loss
        assert row[key] == pytest.approx(row["final_loss_torch"], rel=1e-4), key
    assert row["ours_data_parallel_ms"] > 0 and row["ratio_data_parallel"] > 0


def test_bench_parallel_tiny():
    rows = _run("bench_parallel.py", "--config", "tiny", "--threads", "2", "--repeats", "1")
    step, loads = rows[0], rows[1:]
    for key in ("one_thread_ms", "ops_ms", "data_ms", "shard_alone_ms", "data_speedup", "data_shard_efficiency"):
        assert step[key] > 0, key
    assert [r["load"] for r in loads] == ["gemm", "stream", "matvec", "short_calls"] and all(r["efficiency"] > 0 for r in loads)


def test_bench_generate_tiny_same_tokens():
    (row,) = _run("bench_generate.py", "--config", "tiny", "--batches", "2", "--new", "3", "--repeats", "1",
                  "--threads", "1", "--prompt", "4")
    assert row["same_tokens"] is True
    assert row["throughput_ratio_ours_over_torch"] > 0


def test_bench_blas_tiny_without_mkl():
    (row,) = _run("bench_blas.py", "--config", "tiny", "--threads", "1", "--repeats", "1")
    assert row["numpy_ms"] > 0 and row["torch_ms"] > 0 and "mkl_ctypes_ms" not in row


def test_bench_blas_decode_rows():
    (row,) = _run("bench_blas.py", "--config", "tiny", "--threads", "1", "--repeats", "1", "--decode-rows", "16")
    assert row["rows"] == 16
    assert row["numpy_ms"] > 0 and row["numpy_x_wt_ms"] > 0 and row["torch_ms"] > 0
    (alone,) = _run("bench_blas.py", "--config", "tiny", "--threads", "1", "--repeats", "1", "--decode-rows", "2",
                    "--without-torch")
    assert alone["numpy_ms"] > 0 and "torch_ms" not in alone


def test_bench_core_gelu_kernel_quick():
    rows = _run("bench_core.py", "--only", "kernels", "--quick", "--threads", "1")
    assert [r["name"] for r in rows] == ["gelu fwd 16x1536", "gelu fwd+bwd 16x1536",
                                         "gelu fwd 512x1536", "gelu fwd+bwd 512x1536"]
    assert all(r["ours_us"] > 0 and r["torch_us"] > 0 for r in rows)


@pytest.mark.skipif(not allocator.is_glibc(), reason="the malloc settings exist only in glibc")
def test_bench_malloc_tiny_both_settings():
    rows = _run("bench_malloc.py", "--config", "tiny", "--threads", "1", "--steps", "1", "--warmup", "1",
                "--rounds", "1")
    per_child, summary = rows[:-1], rows[-1]
    assert sorted(r["malloc"] for r in per_child) == ["reuse", "system"]
    assert all(r["ms"] > 0 and r["max_rss_mib"] > 0 for r in per_child)
    assert summary["ratio_reuse_over_system"] > 0


def test_bench_grpo_tiny_same_logprobs():
    (row,) = _run("bench_grpo.py", "--config", "tiny", "--prompts", "2", "--G", "3", "--new", "4", "--repeats", "1",
                  "--threads", "1")
    assert row["mean_logprob_ours"] == pytest.approx(row["mean_logprob_torch"], abs=1e-4)
    for key in ("ratio_rollout", "ratio_update", "ratio_step", "ours_rollout_tokens_per_s"):
        assert row[key] > 0, key


def test_bench_moe_tiny_sides_agree():
    rows = _run("bench_moe.py", "--tokens", "64", "--dim", "16", "--hidden", "8", "--experts", "4", "--repeats", "1")
    (row,) = rows
    assert row["experts"] == 4 and row["top_k"] == 2
    assert row["max_abs_diff"]["y"] < 1e-5 and row["max_abs_diff"]["grad_x"] < 1e-5
    assert row["max_abs_diff"]["grad_expert0_down"] < 1e-4
    for key in ("ours_moe_ms", "torch_moe_ms", "moe_ratio_torch_over_ours", "ours_moe_over_dense"):
        assert row[key] > 0, key


def test_bench_mpi_tiny_reports_every_mode():
    import shutil
    if shutil.which("mpiexec") is None:
        pytest.skip("no mpiexec on PATH (pip install -e '.[mpi]')")
    (row,) = _run("bench_mpi.py", "--configs", "tiny", "--steps", "1")
    assert row["ranks"] == 2 and row["gradient_floats"] > 0
    for key in ("one_thread_step_s", "threads_step_s", "mpi_step_s", "allreduce_s", "efficiency_mpi"):
        assert row[key] > 0, key
    assert 0 < row["allreduce_share"] < 1
