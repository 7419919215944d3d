"""Evaluation: policy metrics (reward, KL, pair accuracy), the DeRa sweep, the Q-Adapter comparison, plots."""
