# The vLLM node image (seed 004) is built by the Docker issue; this file is a placeholder so the
# layout is complete. Until then, ./runMe.sh runs the local-process stack.
