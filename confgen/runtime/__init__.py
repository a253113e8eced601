"""Run the stack: secrets, the vLLM entrypoint, the local process supervisor, health waits."""
