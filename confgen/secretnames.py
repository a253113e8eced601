"""Which variable names look like they hold a secret (HF_TOKEN, OPENAI_API_KEY), and the refusal of such a
variable given a value in vars.env or a model's `env:`: those are committed, and their variables are copied
into generated files (models.yml, the Kubernetes ConfigMaps). The value belongs in secrets/<NAME>, one file
per secret (secrets/README.md)."""

from __future__ import annotations

from confgen.errors import Problem

# Whole words of the name, split on "_": HF_TOKEN and OPENAI_API_KEY look secret, TOKENIZERS_PARALLELISM and
# KEYCLOAK_URL do not.
SECRET_WORDS = frozenset({"KEY", "APIKEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS"})
# A last word saying the value is where a secret is kept, not the secret: HF_TOKEN_PATH, SSL_KEY_FILE.
POINTER_WORDS = frozenset({"PATH", "FILE", "DIR"})


def secret_word(name: str) -> str | None:
    """The word that makes `name` look like a secret's name, or None."""
    words = name.upper().split("_")
    if words[-1] in POINTER_WORDS:
        return None
    return next((word for word in words if word in SECRET_WORDS), None)


def looks_secret(name: str) -> bool:
    return secret_word(name) is not None


def literal_secret(where: str, name: str, value: str, *, then: str = "") -> Problem | None:
    """The problem of a secret-looking variable written with a value, or None (an empty value only names it:
    vLLM gets the variable from secrets/<NAME>, confgen.runtime.secret_files.for_vllm)."""
    word = secret_word(name)
    if word is None or not value:
        return None
    then = then or f"leave {name} empty here: vLLM gets it from that file"
    return Problem(where, f"looks like a secret (its name has {word}): its value would be copied in clear into "
                          "generated files such as models.yml",
                   f"put it in secrets/{name} instead and {then}")
