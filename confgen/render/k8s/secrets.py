"""The Secrets the manifests reference but never contain: the user creates them (README.md in the output
says how, from the same secrets/ files the local stack uses). Values never pass through confgen."""

from __future__ import annotations

from dataclasses import dataclass

from confgen.render.k8s.options import K8sOptions


@dataclass(frozen=True)
class UserSecret:
    name: str
    key: str
    purpose: str
    source: str  # how to fill it: a file in secrets/, or a literal the user writes
    optional: bool = False
    kind: str = "generic"

    def command(self, namespace: str) -> str:
        if self.kind == "tls":
            return f"kubectl -n {namespace} create secret tls {self.name} --cert=server.crt --key=server.key"
        if self.source.startswith("secrets/"):
            return (f"kubectl -n {namespace} create secret generic {self.name} "
                    f"--from-file={self.key}={self.source}")
        # A URL read by an env var: --from-literal keeps a trailing newline out of it.
        return f"kubectl -n {namespace} create secret generic {self.name} --from-literal={self.key}='{self.source}'"


VLLM_API_KEY = UserSecret("confgen-vllm-api-key", "VLLM_API_KEY",
                          "the key every vLLM requires; only the gateway sends it", "secrets/VLLM_API_KEY")
HF_TOKEN = UserSecret("confgen-hf-token", "HF_TOKEN", "HuggingFace token for gated models (optional)",
                      "secrets/HF_TOKEN", optional=True)
MASTER_KEY = UserSecret("confgen-litellm-master-key", "LITELLM_MASTER_KEY",
                        "the gateway's master key (administration, and a client key)", "secrets/LITELLM_MASTER_KEY")
# Our gateway reads the URL as CONFGEN_DATABASE_URL (confgen.gateway.config): LiteLLM itself must never
# see DATABASE_URL, with which it exits at start-up for want of Prisma (FINDINGS).
DATABASE = UserSecret("confgen-database", "DATABASE_URL",
                      "PostgreSQL for keys and the usage ledger; the gateway gets it as CONFGEN_DATABASE_URL",
                      "postgresql://USER:PASSWORD@HOST:5432/confgen")
POSTGRES_PASSWORD = UserSecret("confgen-postgres", "POSTGRES_PASSWORD",
                               "the in-cluster PostgreSQL's password (the gateway gets it as PGPASSWORD)",
                               "secrets/POSTGRES_PASSWORD")
REDIS_URL = UserSecret("confgen-redis", "REDIS_URL", "external Redis for shared limits (CONFGEN_REDIS_URL)",
                       "redis://:PASSWORD@HOST:6379/0")
TLS = UserSecret("confgen-tls", "tls.crt", "the Ingress's HTTPS certificate and key", "", kind="tls")


def user_secrets(options: K8sOptions) -> list[UserSecret]:
    """Every Secret the manifests of these options reference, in the order the README lists them."""
    found = [VLLM_API_KEY, HF_TOKEN, MASTER_KEY]
    found.append(DATABASE if options.postgres == "external" else POSTGRES_PASSWORD)
    if options.redis == "external":
        found.append(REDIS_URL)
    if options.edge == "ingress":
        found.append(TLS)
    return found
