"""What every constraint family is written against: the rule names, a violation, the view of
a decision the checks read, and the small encoder protocol both backends implement.

A family is a module with ``RULES`` (the :class:`Rule` values it reports), ``HINTS`` (what
each rule asks, for test reports), ``check(view)``
(the evaluator's judgement: a list of :class:`Violation`) and ``encode(enc, form)`` (the same
rule as integer-program constraints, through :class:`Encoder` only, so CP-SAT and PuLP share
it). Nothing here imports a solver or the formulation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from stepopt.model import Decision, Request, StepProblem

if TYPE_CHECKING:
    from stepopt.formulation.spec import Formulation


class Rule(StrEnum):
    """The constraint a violation breaks."""

    UNKNOWN_REQUEST = "unknown_request"
    NEGATIVE_TOKENS = "negative_tokens"
    BUDGET = "budget"
    CONCURRENCY = "concurrency"
    PHASE = "phase"
    DECODE_FIRST = "priority_decode_first"
    RUNNING_FIRST = "priority_running_first"
    WAITING_ORDER = "priority_waiting_order"
    KV_CAPACITY = "kv_capacity"
    PREEMPTION = "preemption"  # a preempted id that is not a running request, or gets tokens
    LATENCY_CAP = "latency_cap"  # goodput objective only: L > T


@dataclass(frozen=True, slots=True)
class Violation:
    rule: Rule
    message: str
    request_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": str(self.rule),
            "message": self.message,
            "request_ids": list(self.request_ids),
        }


@dataclass
class DecisionView:
    """A decision as the checks read it, computed once per evaluation.

    ``tokens`` holds the positive counts of known requests; a preempted running request gives
    back its slot and its KV blocks (recompute preemption, as vLLM does) and takes no part in
    the priority rules, so ``kept`` lists the running requests that stay. ``unusual``, when
    the evaluator sets it, lists the ids of ``tokens`` (in its order) other than 1-token
    decodes: the only ones the phase rule and the prefill side of the priority rule read.
    """

    problem: StepProblem
    decision: Decision
    tokens: dict[str, int]
    preempted: frozenset[str]
    kept: list[Request]
    admitted: list[Request]
    latency_ns: int = 0
    new_blocks: int = 0
    freed_blocks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    unusual: list[str] | None = None

    def c(self, rid: str) -> int:
        return self.tokens.get(rid, 0)

    def candidates(self) -> list[str] | dict[str, int]:
        """The scheduled ids other than 1-token decodes, in ``tokens`` order (a superset when
        ``unusual`` is not set: every scheduled id)."""
        return self.tokens if self.unusual is None else self.unusual


class Encoder(Protocol):
    """The operations a constraint family needs from a backend (CP-SAT or PuLP).

    Linear expressions are the backend's own, built with ``+``, ``*`` and comparisons; ``c``
    and ``z`` are the tokens and scheduled variables per item (``c[i] is z[i]`` for a decode),
    ``tokens`` the total ``S`` and ``latency`` the step latency expression.
    """

    c: Sequence[Any]
    z: Sequence[Any]
    tokens: Any
    latency: Any

    def add(self, constraint: Any, name: str = "") -> None:
        """Add a linear constraint (``expr <= rhs`` and friends)."""

    def int_var(self, lo: int, hi: int, name: str) -> Any: ...

    def bool_var(self, name: str) -> Any: ...

    def total(self, exprs: Sequence[Any]) -> Any:
        """The sum of ``exprs``."""

    def at_least_if(self, expr: Any, bound: int, literal: Any) -> None:
        """``expr >= bound`` whenever ``literal`` is true (``expr`` is non-negative)."""

    def only_if_all(self, literal: Any, prerequisites: Sequence[Any]) -> None:
        """``literal`` may be true only if every prerequisite is."""


class Family(Protocol):
    """A constraint family module (see the module docstring)."""

    RULES: tuple[Rule, ...]
    HINTS: dict[Rule, str]

    def check(self, view: DecisionView) -> list[Violation]: ...

    def encode(self, enc: Encoder, form: Formulation) -> None: ...


def ids(requests: Sequence[Request]) -> tuple[str, ...]:
    return tuple(r.id for r in requests)


__all__ = ["DecisionView", "Encoder", "Family", "Rule", "Violation", "ids"]
