"""``lifecycle release plan | apply | approve | reject | run``: the declarative release
policy (``release.yaml``) and its controller."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import click

from lifecycle.cli._base import State, cli, emit, json_option, pass_state

_FILE = click.option(
    "-f",
    "--file",
    "path",
    default="release.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The release policy.",
)

_MARK = {
    "ready": "->",
    "done": "ok",
    "up-to-date": "ok",
    "waiting-approval": "..",
    "soaking": "..",
    "no-candidate": "  ",
    "manual": "  ",
    "rejected": "xx",
    "gates-failed": "xx",
    "restricted": "xx",
}


def _load(state: State, path: str) -> Any:
    from lifecycle.release.policy import load_policy

    return load_policy(path, state.config)


def plan_text(d: dict[str, Any], applied: bool = False) -> str:
    """The plan (or what apply did) as lines: one per hop, then the scheduled jobs."""
    lines = [f"{d['file']} (sha256 {d['digest'][:12]})"]
    for h in d["hops"]:
        version = f"v{h['version']}" if h["version"] else "-"
        lines.append(
            f"  {_MARK.get(h['state'], '  ')} {h['model']} {h['hop']:<10} {h['source']:>8} -> "
            f"{h['target']:<8} {version:<5} {h['state']:<16} {h['detail']}"
        )
        for g in h.get("gates") or []:
            result = {True: "pass", False: "FAIL", None: "skipped"}[g.get("passed")]
            value = g.get("value")
            shown = f"{value:.6g}" if isinstance(value, float) else value
            lines.append(f"       gate {g.get('gate')}: {shown} {result}")
    for r in d.get("restrictions") or []:
        verb = "restrict" if r["restricted"] else "lift the restriction of"
        done = "" if applied else " (planned)"
        lines.append(
            f"  {verb} {r['model']} v{r['version']} in '{r['workspace']}': {r['reason']}{done}"
        )
        lines += [f"    {line}" for line in r.get("rolled_back") or []]
    for j in d.get("jobs") or []:
        due = "due" if j.get("due") else "done"
        lines.append(
            f"  {j['kind']} {j['model']}/{j['job']} '{j['schedule']}' in '{j['workspace']}': "
            f"slot {j['slot']} {due}; next {j['next']}"
        )
    if applied:
        if d["actions"] or d.get("restrictions"):
            lines += [
                f"  done: {a['model']} {a['hop']}: {a['from']} -> {a['to']}" for a in d["actions"]
            ]
        else:
            lines.append("nothing to do: every hop is up to date or waiting")
    return "\n".join(lines)


@cli.group("release")
def release_group() -> None:
    """Release automation from a policy file: plan, apply, approvals, the controller.

    \b
    Example:
      lifecycle release plan -f release.yaml
      lifecycle release apply -f release.yaml
      lifecycle release approve churn 1 --hop prod --comment "reviewed the holdout report"
      lifecycle release run -f release.yaml --once
    """


@release_group.command("plan")
@_FILE
@json_option
@pass_state
def plan_cmd(state: State, path: str, as_json: bool) -> None:
    """Show what apply would do now: each hop's candidate, its gates (dry run), what waits
    for approval or soak, and which scheduled jobs are due. Changes nothing.

    \b
    Example:
      lifecycle release plan -f release.yaml --json
    """
    from lifecycle.release.apply import plan
    from lifecycle.release.jobs import job_states

    policy = _load(state, path)
    out = plan(policy, state.config)
    out.jobs = [j.to_dict() for j in job_states(policy, state.config)]
    emit(out.to_dict(), as_json, plan_text)


@release_group.command("apply")
@_FILE
@click.option("--auto-approve", is_flag=True, help="Approve the hops that wait for approval.")
@json_option
@pass_state
def apply_cmd(state: State, path: str, auto_approve: bool, as_json: bool) -> None:
    """Promote every hop that is ready (gates pass, approved, soaked), in order; each action
    is an audit event with the release file's digest. A second apply with nothing new
    changes nothing and says so.

    \b
    Example:
      lifecycle release apply -f release.yaml
    """
    from lifecycle.release.apply import apply

    policy = _load(state, path)
    out = apply(policy, state.config, auto_approve=auto_approve)
    emit(out.to_dict(), as_json, lambda d: plan_text(d, applied=True))


def _decide_cmd(approve: bool) -> Any:
    verb = "approve" if approve else "reject"

    @release_group.command(verb)
    @click.argument("name")
    @click.argument("version")
    @click.option("--hop", required=True, help="The hop (its name in the release file).")
    @click.option("--by", default=None, help="Who decides (default: the current user).")
    @click.option("--comment", default=None, help="Why.")
    @_FILE
    @json_option
    @pass_state
    def cmd(
        state: State,
        name: str,
        version: str,
        hop: str,
        by: str | None,
        comment: str | None,
        path: str,
        as_json: bool,
    ) -> None:
        from lifecycle.release.apply import decide

        policy = _load(state, path)
        if version == "waiting":  # whatever waits for this hop now (CI approval jobs)
            version = _waiting(state, policy, name, hop)
        event = decide(
            policy, state.config, name, version, hop, approve=approve, by=by, comment=comment
        )
        emit(
            event,
            as_json,
            lambda e: (
                f"{verb}d {name} v{version} (from '{e['source_workspace']}') for hop "
                f"'{hop}', recorded in '{e['workspace']}' by {e['approver']}"
            ),
        )

    cmd.help = (
        f"Record that version VERSION of NAME (numbered in the hop's source workspace) is "
        f"{verb}d for hop HOP, in the target workspace's audit (VERSION 'waiting': the one "
        "waiting for approval at that hop now)."
        + (
            " A hop with approval: required moves only with it."
            if approve
            else " The hop does not move that content until it is approved."
        )
        + f"\n\n\b\nExample:\n  lifecycle release {verb} churn 3 --hop prod --comment 'reviewed'"
    )
    return cmd


def _waiting(state: State, policy: Any, name: str, hop: str) -> str:
    from lifecycle.base.errors import InvalidArgumentError
    from lifecycle.release.hops import plan_hop

    model = policy.model(name)
    hp = plan_hop(state.config, model, model.hop_index(hop))
    if hp.state != "waiting-approval" or hp.version is None:
        raise InvalidArgumentError(
            f"Nothing waits for approval at hop '{hop}' of {name}: {hp.state} ({hp.detail})"
        )
    return hp.version


approve_cmd = _decide_cmd(True)
reject_cmd = _decide_cmd(False)


@release_group.command("run")
@_FILE
@click.option(
    "--poll-interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds between reconcile passes (a webhook starts one at once).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Receive MLflow registry webhooks on this port (secret in "
    "$LIFECYCLE_WEBHOOK_SECRET); the servers among the sources get the webhook.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface the webhook receiver listens on.",
)
@click.option(
    "--webhook-url",
    default=None,
    help="The URL the MLflow servers post to (default http://HOST:PORT/webhook).",
)
@click.option("--once", is_flag=True, help="One pass (hops and due jobs), then exit.")
@click.option("--auto-approve", is_flag=True, help="Approve the hops that wait for approval.")
@json_option
@pass_state
def run_cmd(
    state: State,
    path: str,
    poll_interval: float,
    port: int | None,
    host: str,
    webhook_url: str | None,
    once: bool,
    auto_approve: bool,
    as_json: bool,
) -> None:
    """The controller: apply the policy (a new version in a source moves through its hops),
    and run each scheduled batch job and monitor once per slot (at most once, across
    restarts and controllers). SIGTERM finishes the action in flight, then exits 0.

    With --port, the MLflow tracking servers among the policy's sources post registry
    webhooks (signed with $LIFECYCLE_WEBHOOK_SECRET, checked with its timestamp) that start
    a pass at once; local stores, and every source between webhooks, are polled.

    \b
    Example:
      lifecycle release run -f release.yaml --once
      LIFECYCLE_WEBHOOK_SECRET=... lifecycle release run --port 8700 --poll-interval 300
    """
    import logging
    import os

    from lifecycle.base.errors import ConfigError
    from lifecycle.release.apply import apply
    from lifecycle.release.jobs import run_due

    # A daemon's log lines carry their time.
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not once:
        # A long-running controller imports what a pass needs now, not when a version
        # arrives (MLflow's model code, scikit-learn: seconds on a small machine).
        import mlflow.pyfunc  # noqa: F401

        import lifecycle.registry.promote  # noqa: F401
    stop, wake = threading.Event(), threading.Event()
    receiver = None
    if port is not None and not once:
        from lifecycle.release.webhooks import (
            SECRET_VAR,
            WebhookReceiver,
            register,
            serves_webhooks,
        )

        secret = os.environ.get(SECRET_VAR, "")
        if len(secret) < 16:
            raise ConfigError(
                f"--port needs the webhook secret in ${SECRET_VAR} (16 characters or more)"
            )
        receiver = WebhookReceiver(host, port, secret, wake).start()
        url = webhook_url or f"http://{host}:{receiver.port}/webhook"
        policy = _load(state, path)
        sources = {m.source for m in policy.models} | {
            h.to for m in policy.models for h in m.hops[:-1]
        }
        for name in sorted(sources):
            ws = state.config.get(name)
            if serves_webhooks(ws):
                register(ws, url, secret)
                click.echo(f"webhook: '{name}' posts to {url}")
            else:
                click.echo(
                    f"polling '{name}' every {poll_interval:g}s (no server to post webhooks)"
                )
    if not once:

        def _stop(*_: Any) -> None:
            stop.set()
            wake.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _stop)
    if not once:
        # Every workspace the policy names is opened now: one that cannot be reached is
        # reported at start, and a new local store's tables are not made mid-promotion.
        policy = _load(state, path)
        names = {m.source for m in policy.models} | {h.to for m in policy.models for h in m.hops}
        for name in sorted(names):
            state.config.get(name).client().search_registered_models(max_results=1)
        # Scripts (and the tests) wait for this line: from here a new version is acted on
        # as soon as its webhook arrives or the next poll sees it.
        click.echo(f"ready: {len(policy.models)} model(s), workspaces {', '.join(sorted(names))}")
    try:
        while not stop.is_set():
            policy = _load(state, path)  # re-read: an edited policy applies on the next pass
            out = apply(policy, state.config, auto_approve=auto_approve)
            out.jobs = run_due(policy, state.config)
            _report(out, as_json, once)
            if once:
                return
            wake.wait(poll_interval)
            wake.clear()
    finally:
        if receiver is not None:
            receiver.stop()


def _report(out: Any, as_json: bool, once: bool) -> None:
    if as_json:
        emit(out.to_dict(), True)
        return
    now = time.strftime("%H:%M:%S")
    for a in out.actions:
        click.echo(f"{now} {a['model']} {a['hop']}: {a['from']} -> {a['to']}")
    for r in out.restrictions:
        verb = "restricted" if r["restricted"] else "lifted the restriction of"
        click.echo(
            f"{now} {verb} {r['model']} v{r['version']} in '{r['workspace']}': {r['reason']}"
        )
        for line in r.get("rolled_back") or []:
            click.echo(f"{now}   {line}")
    for j in out.jobs:
        what = "ok" if j.get("ok") else f"FAILED: {j.get('error')}"
        click.echo(f"{now} {j['kind']} {j['job']} slot {j['slot']}: {what}")
    if once and not out.actions and not out.jobs and not out.restrictions:
        click.echo("nothing to do: every hop is up to date and no job is due")


@release_group.command("export")
@_FILE
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Choice(["azure-ml", "github-actions", "azure-pipelines"]),
    help="The orchestrator to write for.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the files.",
)
@json_option
@pass_state
def export_cmd(state: State, path: str, target: str, out_dir: str, as_json: bool) -> None:
    """Write the policy for an orchestrator: Azure ML schedules that invoke the batch
    endpoints on their cron, or a GitHub Actions / Azure Pipelines definition that plans on
    pull requests, runs the controller once on main and on the schedules, and puts each
    approval hop behind an environment whose reviewers approve it.

    \b
    Example:
      lifecycle release export --to github-actions --out .github/workflows
    """
    from lifecycle.release.export import export

    policy = _load(state, path)
    files = export(policy, target, out_dir, policy_path=path)
    emit({"target": target, "files": files}, as_json, lambda d: "\n".join(d["files"]))
