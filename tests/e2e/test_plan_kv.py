"""The planner's KV bytes per token for tiny-cpu against what the real CPU vLLM reports at start-up.

vLLM's CPU build sizes its KV cache from VLLM_CPU_KVCACHE_SPACE (GiB) and logs
"CPU KV cache size: N tokens"; N = space / bytes per token, rounded down to whole blocks. The test
reads the log of the session's stack (one vLLM start shared with the other e2e tests).
"""

from __future__ import annotations

import re

import pytest

from confgen.catalog import select
from confgen.load import Project
from confgen.plan import kv_bytes_per_token, spec_from
from tests.e2e.conftest import ROOT, Stack

pytestmark = pytest.mark.e2e

_KV_LINE = re.compile(r"(?:CPU|GPU) KV cache size: ([\d,]+) tokens, Maximum concurrency for (\d+) tokens "
                      r"per request: ([\d.]+)x")
# vLLM allocates whole blocks (block size 16 to 128 tokens here): the count may fall short by one block.
TOLERANCE_TOKENS = 128


def test_vllm_kv_cache_size_matches_the_planner(stack: Stack) -> None:
    model = select(Project(ROOT), ["tiny-cpu"], environ={}).models[0]
    spec = spec_from(model)
    per_token = kv_bytes_per_token(spec.arch, spec.kv_bytes, spec.tensor_parallel)
    assert per_token == 1024
    space_bytes = float(model.env["VLLM_CPU_KVCACHE_SPACE"]) * 2**30
    planned_tokens = int(space_bytes // per_token)

    log = (stack.run_dir / "logs" / "vllm-tiny-cpu.log").read_text(errors="replace")
    found = _KV_LINE.search(log)
    assert found, f"no KV cache size line in the vLLM log:\n{log[-3000:]}"
    reported = int(found.group(1).replace(",", ""))
    assert 0 <= planned_tokens - reported <= TOLERANCE_TOKENS, (reported, planned_tokens)
    assert int(found.group(2)) == model.max_model_len == spec.default_context
    assert float(found.group(3)) == pytest.approx(reported / spec.default_context, abs=0.01)
