"""PyTorch entry point: `bitladder.torch.ProgressiveModel` (imports torch; the rest of bitladder does not).

>>> from bitladder.torch import ProgressiveModel        # doctest: +SKIP
>>> model = ProgressiveModel(module, "http://127.0.0.1:8000/models/minilm.blad", apply="incremental")  # doctest: +SKIP
"""

from .runtime.torch import ProgressiveModel

__all__ = ["ProgressiveModel"]
