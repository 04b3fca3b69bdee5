"""Inference scaling on a trained model: self-consistency voting (self_consistency.py),
checked-prefix self-refinement (refine.py), and the evaluation methods that compare them on the
same problems (methods.py). Answers are graded by grading.rewards; decoding is generate/."""
