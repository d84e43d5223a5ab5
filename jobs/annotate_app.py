"""The annotation app: human raters score, rank and explain responses in a browser.

Serves a web app on 127.0.0.1 over a run's ``generate`` stage (or any records stage):
raters log in, score each response on helpfulness / faithfulness / ethics (1-5, the
paper's Appendix B rubric), rank with ties and write reasons; a lead assigns N raters
per query, watches agreement (Krippendorff's alpha, Kendall's tau-b), adjudicates
disagreements and exports the final labels as the ``annotate`` stage's records and as
the official ``data.jsonl``, so ``expand`` and ``pairs`` run unchanged. Everything
lives in one SQLite file (WAL, one transaction per write) under the run directory.

Actions (``action=``): ``serve`` (default; loads new tasks first), ``add-user`` (password
from the environment variable named by ``password_env``, else prompted), ``assign``,
``export``, ``status``, ``assist`` (optional: the critique reward model's critiques as
draft reasons, from ``assist_model`` in this process or the service at ``assist_url``).

    mmrlhf annotate-app run_dir=runs/demo action=add-user user=lead role=lead
    mmrlhf annotate-app run_dir=runs/demo action=add-user user=alice
    mmrlhf annotate-app run_dir=runs/demo action=add-user user=alice replace=true  # new password
    mmrlhf annotate-app run_dir=runs/demo action=assign raters_per_query=2
    mmrlhf annotate-app run_dir=runs/demo
    mmrlhf annotate-app run_dir=runs/demo action=export
"""

import getpass
import os
import sys

from mmrlhf_ray.annotate_app.assist import (
    draft_critiques,
    scorer_critic,
    service_critiques,
    service_request,
)
from mmrlhf_ray.annotate_app.config import AnnotateAppConfig
from mmrlhf_ray.annotate_app.export import export
from mmrlhf_ray.annotate_app.review import STATUSES, agreement, review_query
from mmrlhf_ray.annotate_app.store import Store
from mmrlhf_ray.annotate_app.tasks import gold_labels, load_tasks
from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.config import ConfigError
from mmrlhf_ray.data.release import read_release_file


def open_store(cfg: AnnotateAppConfig) -> Store:
    return Store(cfg.db_path or cfg.app_dir() / "annotations.sqlite")


def load(cfg: AnnotateAppConfig, store: Store) -> None:
    """Add the input stage's new queries (labels already given are never touched), and
    the gold answers."""
    tasks, media, problems = load_tasks(cfg.run_dir, cfg.input_stage)
    added = store.add_tasks(tasks, media)
    print(
        f"annotate-app: {len(tasks)} queries in {cfg.input_stage} ({added} new), "
        f"{len(problems)} rows or queries left out (empty, malformed or bad media)"
    )
    for p in problems[:10]:
        where = p.get("query_id") or p.get("locator")
        print(f"annotate-app: left out {where}: {p.get('field')}: {p.get('reason')}")
    if cfg.gold_jsonl:
        by_id = {t["query_id"]: t for t in tasks}
        n = 0
        for line in read_release_file(cfg.gold_jsonl, "data", known=by_id):
            if line.problem:
                raise ConfigError(
                    f"gold_jsonl line {line.line_no}: {line.problem['field']}: "
                    f"{line.problem['reason']}"
                )
            qid = line.row["query_id"]
            if qid not in by_id:
                raise ConfigError(f"gold_jsonl line {line.line_no}: id {qid!r} is not a task")
            store.set_gold(qid, gold_labels(line.row, by_id[qid]))
            n += 1
        print(f"annotate-app: {n} gold queries from {cfg.gold_jsonl}")


def add_user(cfg: AnnotateAppConfig, store: Store) -> None:
    if not cfg.user:
        raise ConfigError("annotate-app.user: required for action=add-user")
    password = os.environ.get(cfg.password_env) or getpass.getpass(f"password for {cfg.user}: ")
    replaced = store.add_user(cfg.user, cfg.role, password, replace=cfg.replace)
    ended = " (password reset, its sessions ended)" if replaced else ""
    print(f"annotate-app: user {cfg.user} ({cfg.role}) saved in {store.path}{ended}")


def status(cfg: AnnotateAppConfig, store: Store) -> None:
    queries = store.queries()
    counts = dict.fromkeys(STATUSES, 0)
    for q in queries:
        counts[review_query(q, cfg.raters_per_query, cfg.max_score_gap).status] += 1
    report = agreement(queries)
    alpha = ", ".join(f"{k} {_fmt(v)}" for k, v in report.alpha.items())
    states = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(
        f"annotate-app: {len(queries)} queries ({states}); alpha (interval) {alpha}; "
        f"mean tau-b {_fmt(report.mean_tau)}"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def assist(cfg: AnnotateAppConfig, store: Store) -> int:
    """Draft reasons from the critique reward model, in this process or through the service."""
    if cfg.assist_model:
        from mmrlhf_ray.service.server import load_scorer

        scorer = load_scorer(cfg.assist_model, critique_max_new_tokens=cfg.assist_max_new_tokens)
        return draft_critiques(store, scorer_critic(scorer))
    if not cfg.assist_url:
        raise ConfigError(
            "annotate-app.assist_model or assist_url: one is needed for action=assist"
        )
    from serve.client import HttpRewardClient

    client = HttpRewardClient(cfg.assist_url, token=os.environ.get(cfg.assist_token_env))
    return draft_critiques(
        store, lambda items: service_critiques(client.score(service_request(items)))
    )


def serve(cfg: AnnotateAppConfig, store: Store) -> None:
    import uvicorn

    from serve.annotate_app import AppSettings, create_app

    settings = AppSettings(
        run_dir=cfg.run_dir,
        raters_per_query=cfg.raters_per_query,
        max_score_gap=cfg.max_score_gap,
        max_reason_chars=cfg.max_reason_chars,
        require_reasons=cfg.require_reasons,
        export_stage=cfg.export_stage,
        data_jsonl=cfg.data_jsonl,
        secure_cookies=cfg.secure_cookies,
    )
    print(f"annotate-app: serving http://{cfg.host}:{cfg.port}/ ({store.path})", flush=True)
    uvicorn.run(create_app(store, settings), host=cfg.host, port=cfg.port, log_level="warning")


def main(argv=None) -> int:
    cfg = parse_stage_args("annotate-app", AnnotateAppConfig, argv, __doc__)
    try:
        return run(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"annotate-app: {exc}", file=sys.stderr)
        return 2


def run(cfg: AnnotateAppConfig) -> int:
    store = open_store(cfg)
    if cfg.action == "add-user":
        add_user(cfg, store)
        return 0
    if cfg.action == "export":
        s = export(
            store,
            cfg.run_dir,
            cfg.export_stage,
            cfg.data_jsonl,
            cfg.raters_per_query,
            cfg.max_score_gap,
        )
        print(
            f"annotate-app: exported {s['records']} final records {s['counts']} "
            f"to {s['stage']} and {s['data_jsonl']}"
        )
        return 0
    if cfg.action == "status":
        status(cfg, store)
        return 0
    load(cfg, store)
    if cfg.action == "assist":
        print(f"annotate-app: reward-model draft reasons for {assist(cfg, store)} queries")
        return 0
    if cfg.action == "assign":
        print(f"annotate-app: {store.assign(cfg.raters_per_query)} new assignments")
        return 0
    serve(cfg, store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
