"""Hyper-parameter sweeps: Optuna studies whose trials train K at a time as one vmapped program (`emohd sweep`)."""
