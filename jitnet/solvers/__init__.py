"""Solvers: the SolverParameter drives a training loop over a train net and its test nets.

``get_solver(path)`` builds the solver the file's ``type`` names."""
from .solver import Solver, SOLVERS, get_solver  # noqa: F401
from .types import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,  # noqa: F401
                    RMSPropSolver, SGDSolver)
