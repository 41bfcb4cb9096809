"""Trace replay: a step-level serving simulator with pluggable per-step policies.

``simulate(trace, policy, latency, target, config)`` replays a request trace one engine step
at a time; ``summarize`` turns a run into comparison metrics; ``write_plan`` writes the plan
files. See docs/simulate.md.
"""

from stepopt.simulate.engine import SimConfig, SimResult, SimulationError, simulate
from stepopt.simulate.metrics import request_columns, summarize
from stepopt.simulate.policies import ExactPolicy, HeuristicPolicy, Policy, make_policy
from stepopt.simulate.targets import AdaptiveTarget, FixedTarget, parse_target_rule
from stepopt.simulate.trace import Trace, load_trace, make_trace

__all__ = [
    "AdaptiveTarget",
    "ExactPolicy",
    "FixedTarget",
    "HeuristicPolicy",
    "Policy",
    "SimConfig",
    "SimResult",
    "SimulationError",
    "Trace",
    "load_trace",
    "make_policy",
    "make_trace",
    "parse_target_rule",
    "request_columns",
    "simulate",
    "summarize",
]
