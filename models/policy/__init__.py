"""The RL policy: its observation, its gymnasium environment on the backtest cores, training with
stable-baselines3, export to ONNX, and serving without stable-baselines3."""
