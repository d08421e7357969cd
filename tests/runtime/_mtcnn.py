"""MTCNN's three nets from the facenet-pytorch wheel, without importing its torchvision-bound package.

The module file `facenet_pytorch/models/mtcnn.py` is loaded under a private package name whose
`utils.detect_face` is a stub (it only serves the detection pipeline, which needs torchvision).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any


def wheel_dir() -> Path:
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("facenet-pytorch is not installed (pip install --no-deps facenet-pytorch)")
    return Path(next(iter(spec.submodule_search_locations)))


def mtcnn_module() -> Any:
    name = "_bitladder_facenet"
    if f"{name}.models.mtcnn" in sys.modules:
        return sys.modules[f"{name}.models.mtcnn"]
    root = wheel_dir()
    for package, path in ((name, root), (f"{name}.models", root / "models"),
                          (f"{name}.models.utils", root / "models" / "utils")):
        module = types.ModuleType(package)
        module.__path__ = [str(path)]
        sys.modules[package] = module
    stub = types.ModuleType(f"{name}.models.utils.detect_face")
    stub.detect_face = stub.extract_face = None  # type: ignore[attr-defined]
    sys.modules[stub.__name__] = stub
    spec = importlib.util.spec_from_file_location(f"{name}.models.mtcnn", root / "models" / "mtcnn.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def mtcnn_net(kind: str, pretrained: bool) -> Any:
    """`pnet`, `rnet` or `onet`, with the wheel's weights or untrained (for weights from a stream)."""
    cls = {"pnet": "PNet", "rnet": "RNet", "onet": "ONet"}[kind]
    return getattr(mtcnn_module(), cls)(pretrained=pretrained).eval()


def weights_path(kind: str) -> Path:
    return wheel_dir() / "data" / f"{kind}.pt"
