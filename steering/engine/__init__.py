"""The steering engine: configurations, methods and steered passes."""

from steering.engine.core import SharedPass, shared_pass, steer_direct, steer_from_shared, steered_modulations
from steering.engine.methods import method_modulation
from steering.engine.spec import METHODS, SteeringConfigError, SteeringSpec, select_connections

__all__ = [
    "METHODS",
    "SharedPass",
    "SteeringConfigError",
    "SteeringSpec",
    "method_modulation",
    "select_connections",
    "shared_pass",
    "steer_direct",
    "steer_from_shared",
    "steered_modulations",
]
