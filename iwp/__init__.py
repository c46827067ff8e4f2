"""IWP: training-free visual-token pruning as implicit weight pruning (arXiv 2604.00757)."""
from . import dual_form, mmr
from .baselines import SelectorInput
from .selection import CATEGORIES, Selection, TokenGroup
from .selectors import SELECTORS, select
from . import models
from .hook import DEFAULT_LAYER, apply, is_patched, last_selection, pruning, remove
from .selectors import DEFAULT_FIRST_CHUNK, DEFAULT_GROWTH, DEFAULT_LAM
from .vision_speed import accelerate_vision, stock_vision

__all__ = ["dual_form", "mmr", "SelectorInput", "Selection", "TokenGroup", "CATEGORIES", "SELECTORS", "select"]
__all__ += ["models", "apply", "remove", "pruning", "last_selection", "is_patched"]
__all__ += ["DEFAULT_LAYER", "DEFAULT_LAM", "DEFAULT_FIRST_CHUNK", "DEFAULT_GROWTH"]
__all__ += ["accelerate_vision", "stock_vision"]
