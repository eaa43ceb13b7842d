"""stepdown_ml: does taking a lower position lead back up for this person?

The serving entry point is :func:`predict`; it is imported lazily so that
``import stepdown_ml`` stays cheap.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs ~10 ms: `stepdown-ml` sets its stop handlers first
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"
__all__ = ["InvalidCandidateError", "predict"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from stepdown_ml import serving

        return getattr(serving, name)
    raise AttributeError(f"module 'stepdown_ml' has no attribute {name!r}")
