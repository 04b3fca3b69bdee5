"""Reasoning-step structure for attention (TransformerConfig.step_attention): which earlier tokens a
chain-of-thought token reads, as one relation per (query, key) pair, computed from the token ids.

The token format (data/formats.py):

    <|question|> question <|think|> step <|step|> step <|step|> ... <|answer|> answer <|endoftext|>

Parts. Each position lies in one part of its document; a <|question|> token starts a new document
(a row may hold several; positions before the first <|question|> form a prompt of their own):
  prompt   from <|question|> up to and including <|think|> (the direct format has no <|think|>:
           the prompt runs up to its <|answer|>)
  step n   after <|think|> or a step's <|step|>, up to and including the next <|step|>: the
           <|step|> token closes its step and belongs to it
  answer   from <|answer|> (included) to the end of the document: <|endoftext|> and any <|think|>,
           <|step|> or <|answer|> after it are ordinary answer tokens
Padding (the pad id) lies in no part and changes nothing.

Result tokens. A step's result is its <|step|> token and the tokens after the step's last marker
token before it. The markers are the tokens whose text contains ">>", the end of a calculator
annotation: in `After the sales, 24 - 5 = <<24-5=19>>19 pens are left. <|step|>` the result is
`19 pens are left. <|step|>` (">>" is one token of the task's BPE, and the split pattern keeps
it apart from the digits around it). A step without a marker, or a tokenizer with no marker token
(">>" split in two, `markers` empty), has its <|step|> token alone as its result. A step that never
closes (the answer starts without its <|step|>) has no result.

Relations of query i to key j (RELATION_NAMES):
  QUESTION  j is in the prompt of i's document
  SAME      j is in i's step, or i and j are both in the answer of one document
  RESULT    j is a result token of a step of i's document before i's (i in a later step or the answer)
  OTHER     any other earlier token: the text of earlier steps, earlier documents
  NONE      j > i (causal), or i or j is padding (a pad token relates to itself alone, as SAME)
A token always relates to itself as QUESTION or SAME, so no query is left without a key (a query with
every key masked would weigh all keys alike, later ones included, and a full forward would then differ
from decoding at that position).

Decoding. Every label of position p (document, part, step, padding) is fixed when p is read; only
the result flag of p is set later, when p's step closes, and a relation reads that flag only for
keys of a step that closed before the query (the query sits in a later step or in the answer). So
the relations of a query depend on the tokens up to it alone: StepStructure, kept in the KV cache
(Transformer.new_cache), labels the tokens as they are fed and gives each new query's relations to
every cached key, the same numbers a full forward computes.

Attention. "mask" hides the keys whose relation is OTHER (and NONE) from every head; "bias" adds a
learned scalar per head and relation (QUESTION, SAME, RESULT, OTHER) to the scores, zero at first,
and hides NONE. `step_inputs` turns relations into what nn/attention.py reads.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import backend
from ..tensor import Tensor

MODES = ("none", "mask", "bias")
QUESTION, SAME, RESULT, OTHER, NONE = range(5)
RELATION_NAMES = ("question", "same", "result", "other", "none")
N_RELATIONS = 4                       # the relations a key can be attended under: one bias each ("bias")
PROMPT, STEP, ANSWER = range(3)       # the parts of a document
SPECIAL_KEYS = ("question", "think", "step", "answer", "pad")
MARKER_TEXT = b">>"


def step_ids_from_tokenizer(tok) -> dict:
    """TransformerConfig.step_ids for a tokenizer with the reasoning-format specials (tokenizer.Tokenizer:
    question_id, think_id, step_id, answer_id, pad_id, and token_bytes for the markers, the tokens whose
    bytes contain ">>")."""
    ids = {key: int(getattr(tok, f"{key}_id")) for key in SPECIAL_KEYS}
    specials = set(getattr(tok, "special_ids", {}).values()) | set(ids.values())
    markers = [i for i in range(int(tok.vocab_size)) if i not in specials and MARKER_TEXT in tok.token_bytes(i)]
    return {**ids, "markers": markers}


def check_step_ids(step_ids, vocab_size: int | None = None) -> dict:
    """step_ids in canonical form ({key: int, ..., "markers": tuple of ints}), or a clear error:
    the five special ids, distinct, and optional markers (not specials), all in [0, vocab_size)."""
    where = "TransformerConfig.step_ids"
    if not isinstance(step_ids, dict):
        raise ValueError(f"{where} must be a dict with the keys {SPECIAL_KEYS} (and optional 'markers'), "
                         f"e.g. nn.step_attention.step_ids_from_tokenizer(tok); got {step_ids!r}")
    unknown = sorted(set(step_ids) - set(SPECIAL_KEYS) - {"markers"})
    missing = [key for key in SPECIAL_KEYS if key not in step_ids]
    if unknown or missing:
        raise ValueError(f"{where}: missing keys {missing}, unknown keys {unknown} (keys: {SPECIAL_KEYS} "
                         "and optional 'markers')")
    markers = step_ids.get("markers", ())
    if not isinstance(markers, (list, tuple, np.ndarray)):
        raise ValueError(f"{where}['markers'] must be a list of token ids, got {markers!r}")

    def token(value, name):
        if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or value < 0 \
                or (vocab_size is not None and value >= vocab_size):
            raise ValueError(f"{where}: {name} must be a token id in [0, {vocab_size}), got {value!r}")
        return int(value)

    out = {key: token(step_ids[key], repr(key)) for key in SPECIAL_KEYS}
    if len(set(out.values())) != len(SPECIAL_KEYS):
        raise ValueError(f"{where}: the special ids must be distinct, got {out}")
    out["markers"] = tuple(sorted({token(m, "a marker") for m in markers}))
    if set(out["markers"]) & set(out[key] for key in SPECIAL_KEYS):
        raise ValueError(f"{where}: a marker is one of the special ids ({out})")
    return out


class StepStructure:
    """The step labels of `batch` rows of up to `max_len` positions, filled left to right by advance();
    relations() gives the relations of the positions just fed to every position so far. A KV cache
    keeps one (KVCache.structure): select_rows follows the cache's rows.

    Per position: doc (document counter), part (PROMPT / STEP / ANSWER), step (a step counter, per
    row), result (a result token of a closed step), pad. Per row, the state after the last position:
    its document, part and step, and the last marker of the open step."""

    def __init__(self, batch: int, max_len: int, step_ids: dict):
        self.ids = check_step_ids(step_ids)
        self.batch, self.max_len = int(batch), int(max_len)
        shape = (self.batch, self.max_len)
        self.tokens = np.zeros(shape, dtype=np.int64)
        self.doc = np.zeros(shape, dtype=np.int32)
        self.part = np.zeros(shape, dtype=np.int8)
        self.step = np.zeros(shape, dtype=np.int32)
        self.result = np.zeros(shape, dtype=bool)
        self.pad = np.zeros(shape, dtype=bool)
        self._markers = np.array(self.ids["markers"], dtype=np.int64)
        self._reset()

    def _reset(self) -> None:
        b = self.batch
        self.length = 0
        self.result[:] = False
        self.cur_doc = np.zeros(b, dtype=np.int32)
        self.cur_part = np.full(b, PROMPT, dtype=np.int8)
        self.cur_step = np.zeros(b, dtype=np.int32)
        self.last_marker = np.full(b, -1, dtype=np.int64)

    def advance(self, ids, start: int) -> None:
        """Read ids (batch, T), the tokens of positions [start, start + T). start may go back (the
        positions from start on are relabelled: the tokens before it are read again), not forward
        past the positions read so far."""
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[0] != self.batch:
            raise ValueError(f"StepStructure: ids of shape {ids.shape} for a batch of {self.batch} rows")
        end = start + ids.shape[1]
        if start < 0 or start > self.length:
            raise ValueError(f"StepStructure: position {start} does not follow the {self.length} positions read")
        if end > self.max_len:
            raise ValueError(f"StepStructure: positions up to {end} exceed the length {self.max_len}")
        if start < self.length:                 # going back: read positions [0, start) again
            self._reset()
            for p in range(start):
                self._push(p)
        self.tokens[:, start:end] = ids
        for p in range(start, end):
            self._push(p)
        self.length = end

    def _push(self, p: int) -> None:
        """Label position p from its token and the rows' state, then move the state past it."""
        tok, s = self.tokens[:, p], self.ids
        real = tok != s["pad"]
        new_doc = real & (tok == s["question"])
        self.cur_doc += new_doc
        self.cur_part[new_doc] = PROMPT
        self.last_marker[new_doc] = -1
        self.cur_part[real & (tok == s["answer"])] = ANSWER      # the <|answer|> token opens the answer
        self.doc[:, p], self.part[:, p], self.step[:, p], self.pad[:, p] = \
            self.cur_doc, self.cur_part, self.cur_step, ~real
        in_step = real & (self.cur_part == STEP)
        if self._markers.size:
            self.last_marker[in_step & np.isin(tok, self._markers)] = p
        closing = in_step & (tok == s["step"])
        for r in np.nonzero(closing)[0]:       # the step's result: after its last marker, through <|step|>
            lo = self.last_marker[r] + 1 if self.last_marker[r] >= 0 else p
            self.result[r, lo:p + 1] = True
        opening = closing | (real & (tok == s["think"]) & (self.cur_part == PROMPT))
        self.cur_part[opening] = STEP
        self.cur_step += opening
        self.last_marker[opening] = -1
        self.length = max(self.length, p + 1)

    def relations(self, start: int, t: int) -> np.ndarray:
        """(batch, t, start + t) int8: the relation of each query position in [start, start + t) to
        every key position in [0, start + t) (QUESTION, SAME, RESULT, OTHER or NONE)."""
        end = start + t
        if end > self.length:
            raise ValueError(f"StepStructure: relations up to position {end}, {self.length} positions read")
        q = slice(start, end)
        qd, qp, qs = self.doc[:, q, None], self.part[:, q, None], self.step[:, q, None]
        kd, kp, ks = self.doc[:, None, :end], self.part[:, None, :end], self.step[:, None, :end]
        same_doc = qd == kd
        rel = np.full((self.batch, t, end), OTHER, dtype=np.int8)
        rel[same_doc & (kp == PROMPT)] = QUESTION
        later = (qp == ANSWER) | ((qp == STEP) & (ks < qs))
        rel[same_doc & (kp == STEP) & self.result[:, None, :end] & later] = RESULT
        rel[same_doc & (((qp == STEP) & (kp == STEP) & (ks == qs)) | ((qp == ANSWER) & (kp == ANSWER)))] = SAME
        causal = np.arange(end)[None, None, :] > np.arange(start, end)[None, :, None]
        pad_q = self.pad[:, q, None]
        rel[causal | self.pad[:, None, :end] | pad_q] = NONE
        # a pad token reads itself alone: a query with no key at all would read every key, later ones too
        rel[pad_q & (np.arange(end)[None, None, :] == np.arange(start, end)[None, :, None])] = SAME
        return rel

    def select_rows(self, rows) -> None:
        """Rows `rows` of the current batch, in their order (KVCache.select_rows / share_prefix)."""
        rows = np.asarray(rows)
        for name in ("tokens", "doc", "part", "step", "result", "pad", "cur_doc", "cur_part", "cur_step",
                     "last_marker"):
            setattr(self, name, getattr(self, name)[rows])
        self.batch = int(rows.size)


def step_relations(ids, step_ids: dict) -> np.ndarray:
    """The relations (B, T, T) int8 of every query to every key of whole sequences ids (B, T)."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"step_relations: ids must be (batch, seq), got shape {ids.shape}")
    structure = StepStructure(ids.shape[0], ids.shape[1], step_ids)
    structure.advance(ids, 0)
    return structure.relations(0, ids.shape[1])


class StepInputs(NamedTuple):
    """What CausalSelfAttention reads for step attention: masked (B, 1, T, S) boolean keys to hide, on
    the model's device; onehot (B, T, S, N_RELATIONS) Tensor of the relations ("bias" only: the
    per-head bias is onehot @ relation_bias^T, zero where the relation is NONE), else None."""
    masked: object
    onehot: Tensor | None


def step_inputs(relations: np.ndarray, mode: str, dtype, device: str = "cpu") -> StepInputs:
    """The attention inputs of relations (B, T, S) under mode "mask" (OTHER and NONE hidden) or "bias"
    (NONE hidden, a one-hot of the relation for the learned bias)."""
    if mode not in MODES[1:]:
        raise ValueError(f"step_inputs: mode must be one of {MODES[1:]}, got {mode!r}")
    masked = (relations >= OTHER) if mode == "mask" else (relations == NONE)
    onehot = None
    if mode == "bias":
        onehot = Tensor._wrap(backend.to_device(
            (relations[..., None] == np.arange(N_RELATIONS, dtype=relations.dtype)).astype(dtype), device))
    return StepInputs(backend.to_device(masked[:, None], device), onehot)
