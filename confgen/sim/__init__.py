"""A vLLM-API simulator: the OpenAI endpoints of `vllm serve` with a latency model and fault injection.

Run it with `python -m confgen.sim --help`. It serves load, fault and gateway benchmarks where the real
(CPU) vLLM would be too slow or too unpredictable; the real vLLM stays the end-to-end reference.
Layout: `config` (flags and faults), `latency` (the timing model), `parse` (request bodies),
`shapes` (response bodies), `metrics` (Prometheus text), `engine` (slots, queue, counters),
`app` (the raw ASGI routes), `cli` (flags -> uvicorn).
"""
