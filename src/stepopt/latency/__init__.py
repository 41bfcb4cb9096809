"""Step latency models: the piecewise-linear model, presets, fitting from GPU profiles."""

from stepopt.latency.model import LatencyModel, PrefillAttention
from stepopt.latency.presets import load_preset, preset_names
from stepopt.latency.pwl import PiecewiseLinear

__all__ = ["LatencyModel", "PiecewiseLinear", "PrefillAttention", "load_preset", "preset_names"]
