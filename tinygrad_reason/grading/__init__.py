"""Grading answers, without the engine: extraction and normalization (answers.py), exact safe
arithmetic (safe_eval.py), a whitelist math parser (math_parser.py), sympy equivalence in killable
worker processes (grader.py), and the one definition of a correct answer and of a format reward
(rewards.py). Nothing here imports the engine or evaluates model output as code."""
