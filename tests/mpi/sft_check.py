"""Run under `mpiexec -n 2`: SFT on the loop with the batch shared by the two ranks against the same
training in one process (rank 0 runs both). One JSON file per rank (in the folder argv[2]): the largest parameter difference
against one process, whether the ranks' parameters are bit-identical, how far training moved them,
and the error a task that does not shard its batches gets."""
import hashlib
import json
import os
import sys

import numpy as np

import tinygrad_reason as tg
from tinygrad_reason.comm import SingleProcess, get_comm
from tinygrad_reason.data import make_splits
from tinygrad_reason.nn import Transformer, TransformerConfig
from tinygrad_reason.tokenizer import Tokenizer
from tinygrad_reason.train import loop
from tinygrad_reason.train.sft import SFTTask, TrainConfig


def _write(result):
    """This rank's results as JSON in the folder argv[2] (not stdout, where mpiexec may join the lines)."""
    with open(os.path.join(sys.argv[2], f"rank{result['rank']}.json"), "w") as f:
        json.dump(result, f)


dtype = {"float64": np.float64, "float32": np.float32}[sys.argv[1]]
comm = get_comm(timeout=60.0)
splits = make_splits("arithmetic", 40, 4, 0, seed=0, min_steps=1, max_steps=2, max_value=9)
tok = Tokenizer.train([" ".join([r.question, *r.steps, str(r.answer)]) for r in splits["train"]], 800)


def trained(c):
    tg.manual_seed(1 + c.rank)          # each rank inits differently: rank 0's weights must win
    cfg = TransformerConfig.gpt(vocab_size=tok.vocab_size, context_length=256, d_model=16, n_layers=1, n_heads=2)
    model = Transformer(cfg).astype(dtype)
    start = {k: np.array(v) for k, v in model.state_dict().items()}
    tcfg = TrainConfig(steps=3, batch_size=4, grad_accum=2, lr=1e-2, min_lr=1e-2, warmup=0, eval_every=3,
                       eval_size=2, max_new_tokens=4, progress=False)
    task = SFTTask(model, tok, splits["train"], splits["test"], "cot", tcfg, comm=c)
    loop.run(model, task, tcfg)
    end = model.state_dict()
    return end, max(float(np.abs(end[k] - start[k]).max()) for k in end), tcfg


params, _, tcfg = trained(comm)
digest = hashlib.sha256(b"".join(np.ascontiguousarray(v).tobytes() for v in params.values())).hexdigest()
out = {"rank": comm.rank, "size": comm.size, "same_on_every_rank": len(set(comm.allgather(digest))) == 1}
if comm.rank == 0:
    ref, ref_change, _ = trained(SingleProcess())
    out["max_abs_diff"] = max(float(np.abs(params[k] - ref[k]).max()) for k in ref)
    out["max_abs_param"] = max(float(np.abs(v).max()) for v in ref.values())
    out["max_change"] = ref_change


class OneProcessTask:            # a task that does not shard its batches
    def micro_step(self, step, micro, n_micro):
        return {"loss": 0.0}


try:
    loop.run(Transformer(TransformerConfig.gpt(vocab_size=8, context_length=8, d_model=8, n_layers=1, n_heads=2)),
             OneProcessTask(), tcfg)
    out["unsharded_error"] = None
except ValueError as e:
    out["unsharded_error"] = str(e)
_write(out)
