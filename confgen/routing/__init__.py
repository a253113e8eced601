"""Routing across replicas and nodes: deployments.yml (schema, load), the resolved plan the LiteLLM config is
rendered from, and the per-deployment state a running gateway reports."""
