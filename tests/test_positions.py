"""Per-row positions: a left-padded row gives the logits of the same row alone, for every position kind."""
import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason.nn import Transformer, TransformerConfig

CONFIGS = {
    "gpt": lambda: TransformerConfig.gpt(vocab_size=50, context_length=16, d_model=32, n_layers=2, n_heads=4),
    "sinusoidal": lambda: TransformerConfig.gpt(vocab_size=50, context_length=16, d_model=32, n_layers=1,
                                                n_heads=2, positions="sinusoidal"),
    "llama": lambda: TransformerConfig.llama(vocab_size=50, context_length=16, d_model=32, n_layers=2, n_heads=4,
                                             n_kv_heads=2),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_left_padded_rows_with_positions_equal_rows_alone(name):
    tg.manual_seed(0)
    model = Transformer(CONFIGS[name]()).astype(np.float64)
    rows = [[5, 7, 9, 11], [3, 4]]
    width = max(map(len, rows))
    ids = np.array([[0] * (width - len(r)) + r for r in rows])
    mask = np.array([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    out = model(ids, pad_mask=mask, positions=positions).numpy()
    for b, r in enumerate(rows):
        alone = model(np.array([r])).numpy()[0]
        np.testing.assert_allclose(out[b, width - len(r):], alone, rtol=1e-10, atol=1e-10)


def test_positions_are_validated():
    model = Transformer(CONFIGS["gpt"]())
    ids = np.zeros((1, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="positions must be integers of shape"):
        model(ids, positions=np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="positions must lie in"):
        model(ids, positions=np.array([[0, 1, 16]]))
