"""Checkpoints: exact round trips, bit-identical resume, crash safety under SIGKILL at chosen points
of a save, garbage collection of old files, torch interop of the weights file, and clear errors."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason import backend
from tinygrad_reason.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tinygrad_reason.nn import Linear, Module, Transformer, TransformerConfig
from tinygrad_reason.optim import SGD, AdamW, warmup_cosine

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(TESTS_DIR)


def tiny_config(**kw):
    base = dict(vocab_size=32, context_length=16, d_model=16, n_layers=2, n_heads=2, dropout=0.1)
    return TransformerConfig.gpt(**{**base, **kw})


BATCHES = [(ids[:, :-1], ids[:, 1:]) for ids in
           np.random.default_rng(1234).integers(0, 32, size=(8, 4, 17))]   # fixed, independent of the seed


def train_steps(model, opt, start, stop, total=8):
    """Steps [start, stop) on the fixed batches with dropout on and a warmup-cosine lr; the losses."""
    model.train()
    losses = []
    for step in range(start, stop):
        opt.set_lr(warmup_cosine(step, 3e-3, 2, total, 3e-4))
        x, y = BATCHES[step % len(BATCHES)]
        loss = model.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def trained(seed, steps):
    """A tiny transformer + AdamW after `steps` training steps from manual_seed(seed): deterministic."""
    tg.manual_seed(seed)
    model = Transformer(tiny_config())
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    train_steps(model, opt, 0, steps)
    return model, opt


def assert_same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].tobytes() == sb[k].tobytes(), k


def assert_same_optimizer(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sorted(sa["state"]) == sorted(sb["state"])
    for i, s in sa["state"].items():
        t = sb["state"][i]
        assert sorted(s) == sorted(t)
        for k, v in s.items():
            if hasattr(v, "shape"):
                assert v.shape == t[k].shape and v.dtype == t[k].dtype and v.tobytes() == t[k].tobytes(), (i, k)
            else:
                assert type(v) is type(t[k]) and v == t[k], (i, k)


def files(directory):
    return sorted(os.listdir(directory))


# ---------------------------------------------------------------- (a) round trip
def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model, opt = trained(seed=1, steps=3)
    rng_before = backend.rng_state("cpu")
    path = save_checkpoint(tmp_path / "ck", model, opt, step=3, extra={"tokens_seen": 3 * 64, "tag": "x"})
    assert os.path.basename(path) == "checkpoint.json"
    assert files(tmp_path / "ck") == ["checkpoint.json", "model-00000003.safetensors",
                                      "optimizer-00000003.safetensors"]
    backend.generator("cpu").random(5)                         # move the RNG on

    tg.manual_seed(77)
    model2 = Transformer(tiny_config())
    opt2 = AdamW(model2.parameters(), lr=1.0, betas=(0.5, 0.6), weight_decay=0.0)
    info = load_checkpoint(tmp_path / "ck", model2, opt2)
    assert info == {"step": 3, "extra": {"tokens_seen": 192, "tag": "x"}, "config": tiny_config().to_dict()}
    assert_same_model(model, model2)
    assert_same_optimizer(opt, opt2)
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999) and isinstance(opt2.param_groups[0]["betas"], tuple)
    assert backend.rng_state("cpu") == rng_before

    meta = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert meta["version"] == 1 and meta["step"] == 3
    assert meta["model_file"] == "model-00000003.safetensors"
    assert meta["optimizer"]["class"] == "AdamW"
    assert meta["optimizer"]["scalar_state"]["0"] == {"step": 3}
    assert "state.0.exp_avg" in meta["optimizer"]["arrays"]


def test_round_trip_sgd_momentum_param_groups_and_plain_module(tmp_path):
    class Net(Module):
        def __init__(self):
            self.a = Linear(3, 4)
            self.b = Linear(4, 2, bias=False)

        def forward(self, x):
            return self.b(self.a(x).relu())

    tg.manual_seed(0)
    net = Net()
    opt = SGD([{"params": [net.a.weight, net.a.bias], "lr": 0.1},
               {"params": [net.b.weight], "lr": 0.01, "momentum": 0.5}], momentum=0.9, nesterov=True)
    for _ in range(2):
        loss = (net(tg.randn(5, 3)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_checkpoint(tmp_path, net, opt, step=2)
    tg.manual_seed(5)
    net2 = Net()
    opt2 = SGD([{"params": [net2.a.weight, net2.a.bias]}, {"params": [net2.b.weight]}])
    info = load_checkpoint(tmp_path, net2, opt2)
    assert info["config"] is None and info["extra"] == {}
    assert_same_model(net, net2)
    assert_same_optimizer(opt, opt2)
    assert opt2.param_groups[1]["momentum"] == 0.5 and opt2.param_groups[0]["nesterov"] is True


def test_model_only_checkpoint(tmp_path):
    model, _ = trained(seed=2, steps=0)
    save_checkpoint(tmp_path, model)
    assert files(tmp_path) == ["checkpoint.json", "model-00000000.safetensors"]
    fresh = Transformer(tiny_config())
    assert load_checkpoint(tmp_path, fresh)["step"] == 0
    assert_same_model(model, fresh)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(tmp_path, fresh, AdamW(fresh.parameters()))


def test_a_config_saved_before_new_fields_existed_still_loads(tmp_path):
    """checkpoint.json written before qkv_bias / o_bias / mlp_bias and the RoPE scaling fields: the
    absent fields mean their defaults; a field that really differs is still a clear error."""
    import json
    model, _ = trained(seed=2, steps=0)
    save_checkpoint(tmp_path, model)
    meta_path = tmp_path / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    for field in ("qkv_bias", "o_bias", "mlp_bias", "rope_scaling", "rope_scaling_factor", "rope_low_freq_factor",
                  "rope_high_freq_factor", "rope_original_context"):
        del meta["config"][field]
    meta_path.write_text(json.dumps(meta))
    fresh = Transformer(tiny_config())
    load_checkpoint(tmp_path, fresh)
    assert_same_model(model, fresh)
    meta["config"]["d_model"] += 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="config mismatch with the model: d_model"):
        load_checkpoint(tmp_path, Transformer(tiny_config()))


# ---------------------------------------------------------------- (b) bit-identical resume
def test_resume_is_bit_identical(tmp_path):
    tg.manual_seed(0)
    model = Transformer(tiny_config())
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    straight = train_steps(model, opt, 0, 8)

    tg.manual_seed(0)
    model = Transformer(tiny_config())
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    first = train_steps(model, opt, 0, 4)
    save_checkpoint(tmp_path, model, opt, step=4)
    del model, opt

    def resumed(restore_rng):
        tg.manual_seed(12345)                                # a different init and RNG stream
        model = Transformer(tiny_config())
        opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
        step = load_checkpoint(tmp_path, model, opt, restore_rng=restore_rng)["step"]
        return train_steps(model, opt, step, 8)

    assert first + resumed(True) == straight                 # exact float equality, all 8 losses
    # control: dropout consumes the RNG, so without restoring it the run diverges
    assert first + resumed(False) != straight


# ---------------------------------------------------------------- (c) SIGKILL during a save
CHILD = textwrap.dedent("""
    import os, sys, time
    sys.path[:0] = [{repo!r}, {tests!r}]
    import test_checkpoint as T
    from tinygrad_reason.io import checkpoint, safetensors as safetensors_io

    directory, point = sys.argv[1], sys.argv[2]
    model, opt = T.trained(seed=1, steps=1)
    checkpoint.save_checkpoint(directory, model, opt, step=1, extra={{"tag": "A"}})
    T.train_steps(model, opt, 1, 2)                          # now the state of trained(1, 2)

    def stop():
        print("KILLME", flush=True)
        time.sleep(120)
        sys.exit("not killed")

    calls = {{"write": 0, "replace": 0}}
    n_model = len(model.state_dict())
    real_write, real_replace = safetensors_io._write_array, os.replace

    def write(f, arr):
        calls["write"] += 1
        if calls["write"] == 1 and point == "model_header_only":
            f.flush(); stop()
        real_write(f, arr)
        if (point == "mid_model_bytes" and calls["write"] == 3) or \\
           (point == "mid_optimizer_bytes" and calls["write"] == n_model + 2):
            f.flush(); stop()

    def replace(src, dst):
        calls["replace"] += 1
        n = calls["replace"]
        if (point, n) in {{("before_model_replace", 1), ("before_optimizer_replace", 2),
                           ("before_json_replace", 3)}}:
            stop()
        real_replace(src, dst)
        if (point, n) == ("after_json_replace", 3):
            stop()

    safetensors_io._write_array = write
    os.replace = replace
    print("SAVING B", flush=True)
    checkpoint.save_checkpoint(directory, model, opt, step=2, extra={{"tag": "B"}})
    print("SAVED B", flush=True)
""")

KILL_POINTS = {   # point -> (checkpoint that must load, a leftover that shows where the kill landed)
    "model_header_only": ("A", r"^\.model-00000002\.safetensors\..*\.tmp$"),
    "mid_model_bytes": ("A", r"^\.model-00000002\.safetensors\..*\.tmp$"),
    "before_model_replace": ("A", r"^\.model-00000002\.safetensors\..*\.tmp$"),
    "mid_optimizer_bytes": ("A", r"^\.optimizer-00000002\.safetensors\..*\.tmp$"),
    "before_optimizer_replace": ("A", r"^\.optimizer-00000002\.safetensors\..*\.tmp$"),
    "before_json_replace": ("A", r"^\.checkpoint\.json\..*\.tmp$"),
    "after_json_replace": ("B", r"^optimizer-00000001\.safetensors$"),   # killed before the old files went
}


@pytest.fixture(scope="module")
def expected_states():
    return {"A": trained(seed=1, steps=1), "B": trained(seed=1, steps=2)}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_mid_save_leaves_a_loadable_checkpoint(tmp_path, point, expected_states):
    import re
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=REPO_DIR, tests=TESTS_DIR))
    directory = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, str(script), str(directory), point],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"child exited before the kill point {point}: {lines} {proc.stderr.read()}")
            lines.append(line.strip())
            if line.strip() == "KILLME":
                break
        assert lines == ["SAVING B", "KILLME"]
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    want, leftover = KILL_POINTS[point]
    assert any(re.match(leftover, name) for name in files(directory)), files(directory)
    tg.manual_seed(999)
    model = Transformer(tiny_config())
    opt = AdamW(model.parameters())
    info = load_checkpoint(directory, model, opt)
    assert info["extra"] == {"tag": want} and info["step"] == {"A": 1, "B": 2}[want]
    ref_model, ref_opt = expected_states[want]
    assert_same_model(model, ref_model)
    assert_same_optimizer(opt, ref_opt)

    # the next save commits and sweeps every leftover of the killed one
    save_checkpoint(directory, model, opt, step=3)
    assert files(directory) == ["checkpoint.json", "model-00000003.safetensors", "optimizer-00000003.safetensors"]


# ---------------------------------------------------------------- (d) torch reads the weights
def test_weights_file_is_readable_by_safetensors_torch(tmp_path):
    stt = pytest.importorskip("safetensors.torch")
    pytest.importorskip("torch")
    model, opt = trained(seed=3, steps=1)
    save_checkpoint(tmp_path, model, opt, step=1)
    got = stt.load_file(str(tmp_path / "model-00000001.safetensors"))
    sd = model.state_dict()
    assert sorted(got) == sorted(sd)
    for k, v in sd.items():
        assert tuple(got[k].shape) == v.shape and got[k].numpy().tobytes() == v.tobytes(), k
    opt_file = stt.load_file(str(tmp_path / "optimizer-00000001.safetensors"))
    for i, s in opt.state_dict()["state"].items():
        assert opt_file[f"state.{i}.exp_avg"].numpy().tobytes() == s["exp_avg"].tobytes()
        assert opt_file[f"state.{i}.exp_avg_sq"].numpy().tobytes() == s["exp_avg_sq"].tobytes()


# ---------------------------------------------------------------- (e) garbage collection
def test_old_files_are_garbage_collected(tmp_path):
    model, opt = trained(seed=4, steps=0)
    (tmp_path / "notes.txt").write_text("mine")                              # not ours: kept
    (tmp_path / "model-00000099.safetensors").write_bytes(b"stale")          # ours, unreferenced: swept
    (tmp_path / ".optimizer-00000007.safetensors.abc123.tmp").write_bytes(b"half")
    for step in (1, 2, 5):
        save_checkpoint(tmp_path, model, opt, step=step)
        assert files(tmp_path) == sorted(["checkpoint.json", f"model-{step:08d}.safetensors",
                                          f"optimizer-{step:08d}.safetensors", "notes.txt"])
    # the same step again must not overwrite the live files before the json commits
    train_steps(model, opt, 0, 1)
    save_checkpoint(tmp_path, model, opt, step=5)
    assert files(tmp_path) == sorted(["checkpoint.json", "model-00000005-r1.safetensors",
                                      "optimizer-00000005-r1.safetensors", "notes.txt"])
    fresh = Transformer(tiny_config())
    fresh_opt = AdamW(fresh.parameters())
    load_checkpoint(tmp_path, fresh, fresh_opt)
    assert_same_model(model, fresh)
    assert_same_optimizer(opt, fresh_opt)
    save_checkpoint(tmp_path, model, step=5)                  # model only: the optimizer file goes too
    assert files(tmp_path) == ["checkpoint.json", "model-00000005.safetensors", "notes.txt"]


# ---------------------------------------------------------------- (f) errors
def test_missing_directory_and_json(tmp_path):
    model = Transformer(tiny_config())
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope", model)
    with pytest.raises(CheckpointError, match="checkpoint.json is missing"):
        load_checkpoint(tmp_path, model)
    (tmp_path / "checkpoint.json").write_text("{half")
    with pytest.raises(CheckpointError, match="checkpoint.json: invalid JSON"):
        load_checkpoint(tmp_path, model)
    (tmp_path / "checkpoint.json").write_text('{"format": "tinygrad_reason.checkpoint", "version": 99}')
    with pytest.raises(CheckpointError, match="version 99 is not supported"):
        load_checkpoint(tmp_path, model)


def test_json_referencing_a_missing_or_corrupt_file(tmp_path):
    model, opt = trained(seed=5, steps=1)
    save_checkpoint(tmp_path, model, opt, step=1)
    fresh = Transformer(tiny_config())
    path = tmp_path / "optimizer-00000001.safetensors"
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(CheckpointError, match=r"optimizer-00000001\.safetensors.*truncated"):
        load_checkpoint(tmp_path, fresh, AdamW(fresh.parameters()))
    path.unlink()
    with pytest.raises(CheckpointError, match=r"references optimizer-00000001\.safetensors, which is missing"):
        load_checkpoint(tmp_path, fresh, AdamW(fresh.parameters()))
    (tmp_path / "model-00000001.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"references model-00000001\.safetensors, which is missing"):
        load_checkpoint(tmp_path, fresh)


def test_config_mismatch_names_the_field(tmp_path):
    model, opt = trained(seed=6, steps=0)
    save_checkpoint(tmp_path, model, opt)
    other = Transformer(tiny_config(d_model=32))
    before = other.state_dict()["tok_emb.weight"].copy()
    with pytest.raises(CheckpointError, match=r"config mismatch.*d_model: checkpoint 16 vs model 32"):
        load_checkpoint(tmp_path, other, AdamW(other.parameters()))
    assert other.state_dict()["tok_emb.weight"].tobytes() == before.tobytes()      # untouched
    with pytest.raises(CheckpointError, match=r"dropout: checkpoint 0\.1 vs model 0\.0"):
        load_checkpoint(tmp_path, Transformer(tiny_config(dropout=0.0)))


def test_wrong_optimizer_or_model_structure(tmp_path):
    model, opt = trained(seed=7, steps=1)
    save_checkpoint(tmp_path, model, opt, step=1)
    fresh = Transformer(tiny_config())
    with pytest.raises(CheckpointError, match="the optimizer was AdamW, not SGD"):
        load_checkpoint(tmp_path, fresh, SGD(fresh.parameters()))
    with pytest.raises(CheckpointError, match=r"parameter groups hold \[\d+\] parameters, this one \[3\]"):
        load_checkpoint(tmp_path, fresh, AdamW(fresh.parameters()[:3]))
    wrong_order = AdamW(list(reversed(fresh.parameters())))
    with pytest.raises(CheckpointError,
                       match=r"optimizer state state\.1\.exp_avg has shape \(16, 16\), parameter shape \(16,\)"):
        load_checkpoint(tmp_path, fresh, wrong_order)

    class Other(Module):
        def __init__(self):
            self.head = Linear(16, 4)
    with pytest.raises(CheckpointError, match="missing keys.*head.weight"):
        load_checkpoint(tmp_path, Other())


def test_unserialisable_extra_writes_nothing(tmp_path):
    model = Transformer(tiny_config())
    with pytest.raises(TypeError, match="cannot store object"):
        save_checkpoint(tmp_path / "ck", model, extra={"bad": object()})
    assert not (tmp_path / "ck").exists() or files(tmp_path / "ck") == []
    with pytest.raises(ValueError, match="step must be >= 0"):
        save_checkpoint(tmp_path / "ck", model, step=-1)
