"""Operator settings of the web app, read from environment variables (documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from explorer.core.models import DEFAULT_MODEL

MODEL_PRESETS = [
    DEFAULT_MODEL,
    "HuggingFaceTB/SmolLM2-360M-Instruct",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "meta-llama/Llama-3.2-1B-Instruct",
    "google/gemma-2-2b-it",
]


def _env_list(name: str) -> list[str]:
    return [p for p in os.environ.get(name, "").split(os.pathsep) if p]


@dataclass
class AppConfig:
    """Operator settings, from environment variables (documented in the README)."""

    default_model: str = field(default_factory=lambda: os.environ.get("SELFIE_MODEL", DEFAULT_MODEL))
    allow_any_model: bool = field(default_factory=lambda: os.environ.get("SELFIE_ALLOW_ANY_MODEL", "1") == "1")
    allowed_model_dirs: list[str] = field(default_factory=lambda: _env_list("SELFIE_MODEL_DIRS"))
    trust_remote_code: bool = field(default_factory=lambda: os.environ.get("SELFIE_TRUST_REMOTE_CODE") == "1")
    max_prompt_tokens: int = field(default_factory=lambda: int(os.environ.get("SELFIE_MAX_PROMPT_TOKENS", "512")))
    max_cells_per_job: int = field(default_factory=lambda: int(os.environ.get("SELFIE_MAX_CELLS", "4096")))
    job_time_limit_s: float = field(default_factory=lambda: float(os.environ.get("SELFIE_JOB_TIME_LIMIT", "900")))
    # The engine's best batch (python -m explorer bench: 64 on 2 CPU cores); clicks decode beside it.
    max_batch: int = field(default_factory=lambda: int(os.environ.get("SELFIE_MAX_BATCH", "64")))
    public: bool = field(default_factory=lambda: os.environ.get("SELFIE_PUBLIC", "0") == "1")
    session_memory_mb: int = field(default_factory=lambda: int(os.environ.get("SELFIE_SESSION_MEMORY_MB", "2048")))
    cache_mb: int = field(default_factory=lambda: int(os.environ.get("SELFIE_CACHE_MB", "256")))
    session_cache_mb: int = field(default_factory=lambda: int(os.environ.get("SELFIE_SESSION_CACHE_MB", "32")))
    model_memory_mb: int = field(default_factory=lambda: int(os.environ.get("SELFIE_MODEL_MEMORY_MB", "4096")))
    max_control_jobs: int = field(default_factory=lambda: int(os.environ.get("SELFIE_MAX_CONTROL_JOBS", "2")))
