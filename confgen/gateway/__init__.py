"""Code that runs inside the LiteLLM proxy (named in the generated config.yaml)."""
