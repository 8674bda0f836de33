"""The steering engine: configurations, methods, category modes and steered passes.

Names are imported on first use, so the sweep's tables can read the category registry without
loading torch.
"""

from __future__ import annotations

from steering.util.lazy import lazy_attributes

_WHERE = {
    "CATEGORY_MODES": "steering.engine.categories",
    "CategoryMode": "steering.engine.categories",
    "category_mode": "steering.engine.categories",
    "register_category": "steering.engine.categories",
    "SharedPass": "steering.engine.core",
    "shared_pass": "steering.engine.core",
    "steer_direct": "steering.engine.core",
    "steer_from_shared": "steering.engine.core",
    "steered_modulations": "steering.engine.core",
    "METHODS": "steering.engine.methods",
    "method_modulation": "steering.engine.methods",
    "register_method": "steering.engine.methods",
    "SteeringConfigError": "steering.engine.spec",
    "SteeringSpec": "steering.engine.spec",
    "select_connections": "steering.engine.spec",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_attributes(__name__, _WHERE)
