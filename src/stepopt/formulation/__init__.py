"""The integer program of one scheduling step, described once (``spec``), with its priority
partial order (``priority``) and one encoder per modelling layer (``cpsat``, ``milp``)."""

from stepopt.formulation.spec import Formulation, Item, Piece, Term, build

__all__ = ["Formulation", "Item", "Piece", "Term", "build"]
