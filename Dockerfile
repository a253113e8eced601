# The vLLM node (seed 004): the DGX Spark vLLM image plus confgen. At start the entrypoint renders the
# configs for $MODEL into the shared volume and execs `vllm serve` (scripts/entrypoint.sh ->
# confgen exec-vllm, the same path as the local stack). Build on another GPU with
# --build-arg VLLM_IMAGE=<any image with vLLM on PATH>.
ARG VLLM_IMAGE=scitrera/dgx-spark-vllm:0.16.0-t5
FROM ${VLLM_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# confgen lives in its own venv with pinned dependencies, so the image's vLLM and its packages stay
# exactly as built; the entrypoint execs the `vllm` found on PATH.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/gateway.lock /app/requirements/constraints.txt
COPY pyproject.toml README.md /app/src/
COPY confgen /app/src/confgen
RUN python3 -m venv /opt/confgen \
    && /opt/confgen/bin/pip install --no-cache-dir -c /app/requirements/constraints.txt /app/src \
    && rm -rf /app/src

COPY models /app/models
COPY scripts /app/scripts
COPY vars.env litellm_config.template.yaml /app/
# Any user id may run it (compose runs it as the host user, who owns ./secrets): a world-writable
# home for vLLM's and HuggingFace's caches, and the tmpfs mount point.
RUN mkdir -p /home/app/.cache /app/generated_configs /app/secrets \
    && chmod 1777 /home/app /home/app/.cache /app/generated_configs
ENV PATH=/opt/confgen/bin:${PATH} \
    HOME=/home/app \
    HF_HOME=/home/app/.cache/huggingface \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 1000:1000
EXPOSE 8000
ENTRYPOINT ["/app/scripts/entrypoint.sh"]
