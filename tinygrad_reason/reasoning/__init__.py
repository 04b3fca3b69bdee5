"""Reasoning utilities: answer extraction, a whitelist math parser and an answer grader.

Submodules (import them explicitly; this package imports nothing eagerly):

* ``answers``     -- answer extraction (``\\boxed{}``, ``####``, answer-token span, last number)
                     and string normalization.
* ``math_parser`` -- a small tokenizer + recursive-descent parser over a whitelist of
                     LaTeX / plain math that builds capped ASTs and sympy objects directly
                     (never eval/exec/sympify/parse_expr on model output).
* ``grader``      -- ``grade`` / ``grade_many``: equivalence checking where the sympy part runs
                     in a killable worker process under a hard per-item time limit.
"""
