"""Config of the ``annotate-app`` stage (the rater team's web app)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mmrlhf_ray.core.config import Choices

Action = Literal["serve", "add-user", "assign", "export", "status", "assist"]


@dataclass
class AnnotateAppConfig(Choices):
    """Config of ``annotate-app``: the rater team's web app over one run directory."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory (local path)"})
    action: Action = field(
        default="serve", metadata={"help": "serve | add-user | assign | export | status | assist"}
    )
    input_stage: str = field(
        default="generate", metadata={"help": "generate, or a records stage (e.g. import/records)"}
    )
    db_path: str = field(
        default="",
        metadata={"help": "SQLite file ('' = <run_dir>/annotate-app/annotations.sqlite)"},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind"})
    port: int = field(default=8500, metadata={"help": "port to serve on"})
    raters_per_query: int = field(default=2, metadata={"help": "N raters per (non-gold) query"})
    max_score_gap: int = field(
        default=1, metadata={"help": "raters disagree when a score differs by more"}
    )
    max_reason_chars: int = field(default=2000, metadata={"help": "longest reason accepted"})
    require_reasons: bool = field(
        default=True, metadata={"help": "every response and the ranking need a reason"}
    )
    gold_jsonl: str = field(
        default="", metadata={"help": "known answers (official data.jsonl) for gold queries"}
    )
    user: str = field(default="", metadata={"help": "add-user: the account name"})
    role: Literal["rater", "lead"] = field(
        default="rater", metadata={"help": "add-user: rater | lead (the store's ROLES)"}
    )
    replace: bool = field(
        default=False,
        metadata={"help": "add-user: reset an existing user's password (ends its sessions)"},
    )
    password_env: str = field(
        default="MMRLHF_PASSWORD",
        metadata={"help": "add-user: env var holding the password (else prompt)"},
    )
    export_stage: str = field(
        default="annotate", metadata={"help": "stage the records are written to"}
    )
    data_jsonl: str = field(
        default="",
        metadata={"help": "official-format export ('' = <run_dir>/annotate-app/data.jsonl)"},
    )
    assist_model: str = field(
        default="",
        metadata={"help": "assist: critique reward model dir, run in this process ('' = none)"},
    )
    assist_url: str = field(
        default="", metadata={"help": "assist: or the reward service's URL (serve-reward)"}
    )
    assist_token_env: str = field(
        default="MMRLHF_RM_TOKEN", metadata={"help": "assist: env var with the service's token"}
    )
    assist_max_new_tokens: int = field(
        default=64, metadata={"help": "assist: critique length (in-process model)"}
    )
    secure_cookies: bool = field(
        default=False, metadata={"help": "mark cookies Secure (behind HTTPS)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.raters_per_query < 1:
            raise ValueError("annotate-app.raters_per_query: must be >= 1")

    def app_dir(self) -> Path:
        return Path(self.run_dir) / "annotate-app"
