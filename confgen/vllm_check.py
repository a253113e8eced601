"""Validate each model's command with vLLM's own argument parser (placeholder: replaced by the helper)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from confgen.errors import Problem
from confgen.load import Project
from confgen.merge import ResolvedModel


@dataclass
class VllmReport:
    summary: str
    problems: list[Problem] = field(default_factory=list)


def check_commands(project: Project, models: Sequence[ResolvedModel]) -> VllmReport:
    return VllmReport(summary="vLLM argument check not run: not implemented yet")
