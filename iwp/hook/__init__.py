"""The pruning hook: api (apply, remove, pruning, last_selection and the wiring), state (what the hooks
share), scoring (layer K's selector inputs and the selection), cut (the shortened sequence and its masks)."""
from .api import apply, is_patched, last_selection, pruning, remove
from .state import DEFAULT_LAYER

__all__ = ["apply", "remove", "pruning", "last_selection", "is_patched", "DEFAULT_LAYER"]
