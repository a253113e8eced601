"""confgen: one model catalog -> a validated vLLM + LiteLLM gateway.

The pipeline, one module each: load -> schema (validate) -> merge -> render -> run.
"""

__version__ = "0.1.0"
