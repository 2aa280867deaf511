"""A discrete-event simulator of many clients balancing over many servers, with the library's real balancers.

See API.md beside this file for how a scenario is declared and run, and what a result holds.
"""

from .engine import Call, Server, Sim, run
from .model import (
    Bimodal,
    Client,
    Constant,
    DeadServer,
    Exponential,
    Fault,
    LogNormal,
    RollingDeploy,
    Scenario,
    SlowServer,
    ZoneOutage,
    client_address,
    server_address,
)
from .result import Result, cov, percentile

__all__ = [
    "Bimodal",
    "Call",
    "Client",
    "Constant",
    "DeadServer",
    "Exponential",
    "Fault",
    "LogNormal",
    "Result",
    "RollingDeploy",
    "Scenario",
    "Server",
    "Sim",
    "SlowServer",
    "ZoneOutage",
    "client_address",
    "cov",
    "percentile",
    "run",
    "server_address",
]
