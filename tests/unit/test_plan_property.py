"""Properties of the planner over random architectures, checkpoints and GPU profiles.

- more context or more concurrency never needs less memory (per model and in all);
- a plan that says it fits never has shares adding up past the ceiling, gives each model at least
  what it needs, and holds the asked sequences at full length;
- fitting is monotone: what fits still fits with a shorter context or fewer sequences.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from confgen.plan import Gpu, GpuProfile, ModelSpec, plan
from confgen.schema import Arch, SlidingWindow

BOUNDED = settings(max_examples=300, deadline=None)


@st.composite
def archs(draw: st.DrawFn) -> Arch:
    layers = draw(st.integers(1, 96))
    with_kv = draw(st.integers(0, layers))
    window = draw(st.none() | st.builds(SlidingWindow, layers=st.integers(1, max(1, layers - with_kv)),
                                        window=st.integers(1, 4096)))
    if window is not None and with_kv + window.layers > layers:
        window = None
    state = draw(st.none() | st.floats(0.1, 200))
    if with_kv == 0 and window is None and state is None:
        with_kv = 1
    mla = draw(st.booleans())
    return Arch(
        layers=layers, layers_with_kv=with_kv,
        kv_heads=None if mla else draw(st.integers(1, 64)),
        head_dim=None if mla else draw(st.sampled_from([64, 80, 128, 256])),
        mla_latent_dim=draw(st.integers(64, 1024)) if mla else None,
        sliding_window=window,
        state_mb_per_seq=state,
        native_context=draw(st.integers(512, 1 << 20)),
    )


@st.composite
def specs(draw: st.DrawFn, index: int = 0) -> ModelSpec:
    return ModelSpec(
        name=f"m{index}", file=f"models/m{index}.yml", hf_id=f"org/m{index}",
        weights_gb=draw(st.floats(0.001, 400)), arch=draw(archs()),
        kv_cache_dtype="fp8", kv_bytes=draw(st.sampled_from([1, 2, 4])),
        tensor_parallel=draw(st.sampled_from([1, 1, 1, 2, 4])),
    )


model_lists = st.integers(1, 4).flatmap(lambda n: st.tuples(*(specs(i) for i in range(n))))
gpus = st.builds(
    lambda memory, ceiling, reserve: Gpu("g", GpuProfile(description="g", memory_gb=memory, ceiling=ceiling,
                                                         os_reserve_gb=reserve * memory), "test"),
    st.floats(1, 1024), st.floats(0.05, 1.0), st.floats(0, 0.9),
)
contexts = st.integers(1, 1 << 20)
counts = st.integers(1, 512)


@BOUNDED
@given(model_lists, gpus, st.tuples(contexts, contexts).map(sorted), st.tuples(counts, counts).map(sorted))
def test_more_context_or_concurrency_never_needs_less(models: tuple[ModelSpec, ...], gpu: Gpu,
                                                      context_range: list[int], count_range: list[int]) -> None:
    (c_lo, c_hi), (n_lo, n_hi) = context_range, count_range
    low = plan(models, gpu, c_lo, n_lo)
    for high in (plan(models, gpu, c_hi, n_lo), plan(models, gpu, c_lo, n_hi), plan(models, gpu, c_hi, n_hi)):
        assert high.total_gb >= low.total_gb - 1e-9
        for a, b in zip(low.models, high.models, strict=True):
            assert b.kv_gb >= a.kv_gb - 1e-12
            assert b.needed_share >= a.needed_share
        if high.fits:
            assert low.fits


@BOUNDED
@given(model_lists, gpus, contexts, counts, st.booleans())
def test_a_plan_that_fits_stays_under_the_ceiling(models: tuple[ModelSpec, ...], gpu: Gpu, context: int,
                                                  concurrency: int, fill: bool) -> None:
    result = plan(models, gpu, context, concurrency, fill=fill)
    if not result.fits:
        assert result.reasons
        assert result.suggestions
        return
    assert result.share_sum <= result.ceiling + 1e-9
    assert result.ceiling <= gpu.profile.ceiling + 1e-9
    assert result.total_gb <= gpu.budget_gb + 1e-9
    assert result.short_gb == 0
    for m in result.models:
        assert m.needed_share * gpu.profile.memory_gb >= m.total_gb - 1e-9
        assert m.gpu_memory_utilization >= m.needed_share
        assert m.full_length_seqs >= m.concurrency
        assert m.tensor_parallel == 1


@BOUNDED
@given(model_lists, gpus, contexts, counts)
def test_suggested_context_and_concurrency_really_fit(models: tuple[ModelSpec, ...], gpu: Gpu, context: int,
                                                      concurrency: int) -> None:
    result = plan(models, gpu, context, concurrency)
    for suggestion in result.suggestions:
        if suggestion.startswith("a shorter context: --context "):
            tokens = int(suggestion.split("--context ")[1].split("K")[0]) * 1024
            assert tokens < context
            assert plan(models, gpu, tokens, concurrency).fits
        if suggestion.startswith("fewer sequences: --concurrency "):
            fewer = int(suggestion.split("--concurrency ")[1].split()[0])
            assert fewer < concurrency
            assert plan(models, gpu, context, fewer).fits
