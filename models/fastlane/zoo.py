"""The model zoo of one horizon: several model families on the same rows, and the ZooBalancer that
blends their calibrated probabilities.

Families (``tradefleet train fastlane --families ...``):

- ``lightgbm``: gradient-boosted trees (the reference; compiled by lleaves for serving);
- ``logistic``: an L2-regularised logistic regression on median-imputed, standardised features;
- ``mlp``: a small torch MLP (the same imputation and scaling inside the network), early-stopped on
  the validation tail and exported to ONNX;
- ``sequence``: a temporal convolution network over the last 60 one-second microstructure vectors
  before the bar (models/fastlane/sequence.py), in torch, exported to ONNX.

Each is fitted by the same recipe (train.py ``fit``): the last 20% of its training rows in time
drive early stopping where the family has it and then a regularised Platt calibration.

The ZooBalancer works in logit space on the calibrated probabilities. Its weights come from a
ridge regression of the centred label on the standardised family logits, each member's penalty
growing with its mean absolute correlation with the others, lambda * (1 + rho * mean|c|): a
member that repeats the others is shrunk more than one that adds something, and near-twins
share a weight rather than doubling it. The weights are non-negative (a member that would get a
negative one leaves and the rest are fitted again: an ensemble that bets against a member is
fitting noise) and normalised to sum to one. A temperature T, fitted by log loss
within [0.5, 5], then rescales the blended logit: above 1 it compresses the overconfidence of
averaging correlated, separately calibrated members; below 1 it gives back the confidence that a
convex average of independent members dilutes. Weights and T are fitted on out-of-fold rows only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FAMILIES = ("lightgbm", "logistic", "mlp", "sequence")
# the file each family's serving artifact is kept in, within a registry version
ARTIFACT = {
    "lightgbm": "model.txt",
    "logistic": "logistic.onnx",
    "mlp": "mlp.onnx",
    "sequence": "sequence.onnx",
}
# families whose input is the one-second window (models/fastlane/sequence.py), not the bar vector
WINDOWED = frozenset({"sequence"})
RIDGE_LAMBDA = 0.5
CORRELATION_PENALTY = 2.0
# Fewer out-of-fold rows than this give no weights worth fitting: the members are blended equally.
MIN_BLEND_ROWS = 100


def check_families(families: Sequence[str]) -> list[str]:
    out = list(dict.fromkeys(families))
    unknown = [f for f in out if f not in FAMILIES]
    if unknown or not out:
        raise ValueError(f"unknown model families {unknown or '(none)'}: known {', '.join(FAMILIES)}")
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(p / (1 - p)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


@dataclass(frozen=True)
class Blend:
    """Weights per family (summing to one) and a temperature on the blended logit."""

    weights: dict[str, float]
    temperature: float = 1.0
    method: str = "ridge"  # "ridge", "equal" (too few rows) or "single"

    def combine(self, probabilities: dict[str, np.ndarray]) -> np.ndarray:
        if len(self.weights) == 1:  # one member: its probability, untouched
            return probabilities[next(iter(self.weights))]
        z = sum(w * _logit(probabilities[f]) for f, w in self.weights.items())
        return _sigmoid(np.asarray(z) / self.temperature)

    def combine_one(self, probabilities: dict[str, float]) -> float:
        """The serving path: one row, no numpy."""
        if len(self.weights) == 1:
            return probabilities[next(iter(self.weights))]
        z = 0.0
        for family, w in self.weights.items():
            p = min(max(probabilities[family], 1e-6), 1 - 1e-6)
            z += w * math.log(p / (1 - p))
        return 1.0 / (1.0 + math.exp(-z / self.temperature))

    def to_meta(self) -> dict[str, Any]:
        return {"weights": self.weights, "temperature": self.temperature, "method": self.method}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Blend:
        return cls(dict(meta["weights"]), float(meta["temperature"]), str(meta.get("method", "ridge")))


def fit_blend(probabilities: dict[str, np.ndarray], y: np.ndarray) -> Blend:
    """The ZooBalancer's weights and temperature from out-of-fold probabilities and labels."""
    families = list(probabilities)
    if len(families) == 1:
        return Blend({families[0]: 1.0}, 1.0, "single")
    if len(y) < MIN_BLEND_ROWS or len(set(y.tolist())) < 2:
        return Blend(dict.fromkeys(families, 1.0 / len(families)), 1.0, "equal")
    Z = np.column_stack([_logit(probabilities[f]) for f in families])
    scale = Z.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a constant member carries nothing; its weight goes to zero below
    Zs = (Z - Z.mean(axis=0)) / scale
    C = np.nan_to_num(np.corrcoef(Zs, rowvar=False), nan=0.0)
    np.fill_diagonal(C, 0.0)
    # Each member's ridge penalty grows with how much the others already say what it says (its
    # mean absolute correlation with them): a redundant member is shrunk more than a unique one.
    redundancy = np.abs(C).sum(axis=1) / max(len(families) - 1, 1)
    penalty = RIDGE_LAMBDA * np.diag(1.0 + CORRELATION_PENALTY * redundancy)
    target = y - y.mean()
    gram, moment = Zs.T @ Zs / len(y), Zs.T @ target / len(y)
    # Non-negative: a member whose weight comes out below zero leaves, and the rest are fitted
    # again without it (an active set; at most one pass per member).
    active = list(range(len(families)))
    beta = np.zeros(len(families))
    while active:
        sub = np.ix_(active, active)
        solved = np.linalg.solve(gram[sub] + penalty[sub], moment[active])
        if (solved > 0).all():
            beta[active] = solved
            break
        active = [k for k, b in zip(active, solved, strict=True) if b > 0]
    # back to the members' own logit units (the blend is applied to their logits)
    raw = beta / scale
    if raw.sum() <= 0:
        return Blend(dict.fromkeys(families, 1.0 / len(families)), 1.0, "equal")
    weights = raw / raw.sum()
    blended = Z @ weights
    temperature = _fit_temperature(blended, y)
    return Blend({f: float(w) for f, w in zip(families, weights, strict=True)}, temperature, "ridge")


def _fit_temperature(z: np.ndarray, y: np.ndarray) -> float:
    """The T in [0.5, 5] minimising log loss of sigmoid(z / T) (a grid: one parameter, a smooth
    loss; 1 is on it, so a blend that needs no rescaling keeps T = 1)."""
    best, best_loss = 1.0, math.inf
    for t in [1.0, *np.exp(np.linspace(math.log(0.5), math.log(5.0), 40))]:
        p = np.clip(_sigmoid(z / t), 1e-6, 1 - 1e-6)
        loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        if loss < best_loss - 1e-12:
            best, best_loss = float(t), loss
    return best


# -- the families' own learners -------------------------------------------------------------------


def train_lightgbm(
    X_fit: np.ndarray, y_fit: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, cfg: Any
) -> tuple[Any, int]:
    import lightgbm as lgb

    train_set = lgb.Dataset(X_fit, y_fit, free_raw_data=False)
    val_set = lgb.Dataset(X_val, y_val, reference=train_set)
    booster = lgb.train(
        cfg.lgb_params(),
        train_set,
        num_boost_round=cfg.rounds,
        valid_sets=[val_set],
        callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)],
    )
    return booster, booster.best_iteration or cfg.rounds


def train_logistic(X_fit: np.ndarray, y_fit: np.ndarray, cfg: Any) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(C=cfg.logistic_c, max_iter=500),
    )
    model.fit(X_fit, y_fit)
    return model


def _served(body: Any, median: np.ndarray, mean: np.ndarray, std: np.ndarray, over_time: bool) -> Any:
    """``body`` with the imputation and scaling inside, so its ONNX export needs nothing around
    it: the training median for a missing value, then (x - mean) / std clipped at +-5, then
    ``body`` (over [n, width, seconds] when ``over_time``: a window), then (down, up)
    probabilities, as the other exports' "probabilities" output."""
    import torch

    class Served(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body
            self.register_buffer("median", torch.tensor(median, dtype=torch.float32))
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

        def forward(self, x: Any) -> Any:
            x = torch.where(torch.isnan(x), self.median, x)
            x = torch.clamp((x - self.mean) / self.std, -5.0, 5.0)
            p = torch.sigmoid(self.body(x.transpose(1, 2) if over_time else x))
            return torch.cat([1 - p, p], dim=1)

    return Served().eval()


def mlp_net(
    n_features: int, hidden: Sequence[int], median: np.ndarray, mean: np.ndarray, std: np.ndarray, seed: int
) -> Any:
    """A torch MLP (ReLU, dropout 0.1) over the bar vector."""
    _torch()
    import torch

    torch.manual_seed(seed)
    layers: list[Any] = []
    width = n_features
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU(), torch.nn.Dropout(0.1)]
        width = h
    layers.append(torch.nn.Linear(width, 1))
    return _served(torch.nn.Sequential(*layers), median, mean, std, over_time=False)


def train_mlp(
    X_fit: np.ndarray, y_fit: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, cfg: Any
) -> tuple[Any, int]:
    median, mean, std = _impute_stats(X_fit)
    net = mlp_net(X_fit.shape[1], cfg.mlp_hidden, median, mean, std, cfg.seed)
    return _fit_torch(net, X_fit, y_fit, X_val, y_val, cfg)


def _impute_stats(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per feature (last axis): the median, and the mean and spread once medians fill the gaps."""
    flat = rows.reshape(-1, rows.shape[-1])
    with warnings.catch_warnings():  # a feature missing on every row: its median is 0 below
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(np.where(np.isfinite(flat), flat, np.nan), axis=0)
    median = np.nan_to_num(median, nan=0.0)
    filled = np.where(np.isnan(flat), median, flat)
    mean, std = filled.mean(axis=0), filled.std(axis=0)
    std[std < 1e-9] = 1.0
    return median, mean, std


def _fit_torch(
    served: Any, X_fit: np.ndarray, y_fit: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, cfg: Any
) -> tuple[Any, int]:
    """Adam on binary cross-entropy with weight decay, batches of 128; the epoch with the best
    validation loss is kept (five epochs of patience)."""
    import torch

    served.train()
    optimiser = torch.optim.Adam(served.body.parameters(), lr=1e-3, weight_decay=1e-3)
    loss_of = torch.nn.BCELoss()
    xf = torch.tensor(X_fit, dtype=torch.float32)
    yf = torch.tensor(y_fit, dtype=torch.float32).reshape(-1, 1)
    xv = torch.tensor(X_val, dtype=torch.float32)
    yv = torch.tensor(y_val, dtype=torch.float32).reshape(-1, 1)
    generator = torch.Generator().manual_seed(cfg.seed)
    best_loss, best_epoch, best_state, patience = math.inf, 0, None, 5
    for epoch in range(cfg.mlp_epochs):
        served.train()
        order = torch.randperm(len(xf), generator=generator)
        for start in range(0, len(xf), 128):
            batch = order[start : start + 128]
            optimiser.zero_grad()
            loss = loss_of(served(xf[batch])[:, 1:], yf[batch])
            loss.backward()
            optimiser.step()
        served.eval()
        with torch.no_grad():
            val_loss = float(loss_of(served(xv)[:, 1:].clamp(1e-6, 1 - 1e-6), yv))
        if val_loss < best_loss - 1e-5:
            best_loss, best_epoch = val_loss, epoch + 1
            best_state = {k: v.clone() for k, v in served.state_dict().items()}
        elif epoch + 1 - best_epoch >= patience:
            break
    if best_state is not None:
        served.load_state_dict(best_state)
    served.eval()
    return served, best_epoch


def _torch() -> Any:
    try:
        import torch
    except ImportError:  # the ml extra alone has no torch
        raise ValueError(
            "the mlp and sequence families need torch: install the rl or sentiment extra"
        ) from None
    torch.set_num_threads(1)
    return torch


def sequence_net(
    seconds: int, width: int, median: np.ndarray, mean: np.ndarray, std: np.ndarray, seed: int
) -> Any:
    """A temporal convolution network over a [seconds, width] window: gaps filled with the
    training median, standardised, two dilated convolutions over time, then their mean over the
    window and their last step side by side into a logistic output."""
    _torch()
    import torch

    torch.manual_seed(seed)

    class Body(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv1d(width, 12, kernel_size=5, dilation=1)
            self.conv2 = torch.nn.Conv1d(12, 12, kernel_size=5, dilation=2)
            self.drop = torch.nn.Dropout(0.1)
            self.out = torch.nn.Linear(24, 1)

        def forward(self, x: Any) -> Any:  # x: [n, width, seconds]
            # Valid convolutions, no padding: the output's last step sees the window's last
            # 13 seconds, and an exported Pad costs more than the convolutions themselves.
            h = torch.relu(self.conv1(x))
            h = torch.relu(self.conv2(h))
            pooled = torch.cat([h.mean(dim=2), h[:, :, -1]], dim=1)
            return self.out(self.drop(pooled))

    served = _served(Body(), median, mean, std, over_time=True)
    served.input_shape = (seconds, width)  # the export's example input
    return served


def train_sequence(
    S_fit: np.ndarray, y_fit: np.ndarray, S_val: np.ndarray, y_val: np.ndarray, cfg: Any
) -> tuple[Any, int]:
    median, mean, std = _impute_stats(S_fit)
    net = sequence_net(S_fit.shape[1], S_fit.shape[2], median, mean, std, cfg.seed)
    return _fit_torch(net, S_fit, y_fit, S_val, y_val, cfg)


def raw_probability(
    family: str, model: Any, X: np.ndarray, best_iteration: int, S: np.ndarray | None = None
) -> np.ndarray:
    """The uncalibrated up-probability of ``model`` (of ``family``) for each row of ``X`` (or of
    ``S``, the rows' one-second windows, for the sequence family)."""
    if family == "lightgbm":
        return np.asarray(model.predict(X, num_iteration=best_iteration))
    if family == "logistic":
        return np.asarray(model.predict_proba(X)[:, 1])
    import torch

    rows = S if family in WINDOWED else X
    if rows is None:
        raise ValueError(f"the {family} family scores one-second windows and none were given")
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), 4096):  # windows are large: score them in chunks
            chunk = torch.tensor(np.asarray(rows[start : start + 4096]), dtype=torch.float32)
            out.append(model(chunk)[:, 1].numpy())
    return np.concatenate(out).astype(float) if out else np.zeros(0)


def export(family: str, model: Any, folder: Path, n_features: int, best_iteration: int) -> None:
    """The family's serving artifacts in a registry version folder (ARTIFACT[family], and for
    lightgbm its ONNX twin too)."""
    if family == "lightgbm":
        model.save_model(str(folder / "model.txt"), num_iteration=best_iteration)
        _lightgbm_onnx(folder / "model.txt", folder / "model.onnx", n_features)
    elif family == "logistic":
        from skl2onnx import to_onnx

        clf = model.steps[-1][1]
        onx = to_onnx(
            model,
            np.zeros((1, n_features), dtype=np.float32),
            options={id(clf): {"zipmap": False}},
            target_opset=15,
        )
        (folder / ARTIFACT[family]).write_bytes(onx.SerializeToString())
    else:
        import torch

        example = torch.zeros(1, *model.input_shape) if family in WINDOWED else torch.zeros(1, n_features)
        with warnings.catch_warnings():  # the TorchScript exporter: no onnxscript dependency
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(folder / ARTIFACT[family]),
                input_names=["x"],
                output_names=["probabilities"],
                dynamic_axes={"x": {0: "n"}},
                opset_version=17,
                dynamo=False,
            )


def _lightgbm_onnx(model_txt: Path, out: Path, n_features: int) -> None:
    import lightgbm as lgb
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = lgb.Booster(model_file=str(model_txt))
    onx = onnxmltools.convert_lightgbm(
        booster, initial_types=[("x", FloatTensorType([None, n_features]))], zipmap=False, target_opset=15
    )
    out.write_bytes(onx.SerializeToString())
