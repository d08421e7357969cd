import types

import bitladder


def test_exports_match_all():
    exported = {name for name in dir(bitladder)
                if not name.startswith("_") and not isinstance(getattr(bitladder, name), types.ModuleType)}
    assert set(bitladder.__all__) == exported


def test_every_error_is_a_bitladder_error():
    errors = [getattr(bitladder, n) for n in bitladder.__all__ if n.endswith("Error")]
    assert all(issubclass(e, bitladder.BitladderError) for e in errors)


def test_core_imports_without_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; import bitladder, bitladder.cli; "
            "from bitladder.sources import load_source; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr
