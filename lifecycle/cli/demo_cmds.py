"""``lifecycle demo`` and ``lifecycle train``."""

from __future__ import annotations

import logging
import sys

import click

from lifecycle.cli._base import State, cli, emit, json_option, pass_state, workspace_option


@cli.command("demo")
@click.option(
    "--dir", "work_dir", default="", help="Folder to run in (default: a new temporary folder)."
)
@click.option(
    "--origin",
    "origins",
    multiple=True,
    type=click.Choice(["notebook", "designer", "automl"]),
    help="Run only these origins (repeatable; default: all three).",
)
@click.option("--rows", default=2000, show_default=True, help="Rows per batch input file.")
@json_option
def demo_cmd(work_dir: str, origins: tuple[str, ...], rows: int, as_json: bool) -> None:
    """Run the six scenarios on two local workspaces, dev and prod.

    {Designer, notebook, AutoML} x {real-time, batch}: make the origin artifact, import it
    into dev, promote it into prod behind gates, serve prod's Production version and query
    it with MLflow and Azure ML payloads, score a folder of CSVs in batch, write the Azure ML
    specs. Exits 1 if any scenario failed.

    \b
    Example:
      lifecycle demo
      lifecycle demo --dir /tmp/demo --origin notebook
    """
    from lifecycle.cli.demo import ORIGINS, run_demo

    if not as_json:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("  %(message)s"))
        demo_logger = logging.getLogger("lifecycle.cli.demo")
        demo_logger.addHandler(handler)
        demo_logger.setLevel(logging.INFO)
        demo_logger.propagate = False
    report = run_demo(work_dir or None, origins=origins or ORIGINS, rows_per_file=rows)
    emit(report.to_dict(), as_json, lambda _: _table(report))
    if not report.ok:
        sys.exit(1)


def _table(report: object) -> str:
    from lifecycle.cli.demo import DemoReport

    assert isinstance(report, DemoReport)
    head = (
        "scenario",
        "model",
        "dev v",
        "prod v",
        "stage",
        "where served or scored",
        "rows",
        "time",
        "ok",
    )
    rows = [
        (
            r.scenario,
            r.model,
            r.dev_version,
            r.prod_version,
            r.stage,
            r.where or r.detail,
            str(r.rows_scored),
            f"{r.seconds:.1f}s",
            "yes" if r.ok else "NO",
        )
        for r in report.results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    lines = ["", "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    failed = [r for r in report.results if not r.ok]
    lines += [f"  {r.scenario}: {r.detail}" for r in failed]
    lines += [f"note: {n}" for n in report.notes]
    if report.registry_violations:
        lines.append(
            f"registry: lifecycle doctor found {len(report.registry_violations)} violation(s):"
        )
        lines += [
            f"  {v['workspace']} {v['model']}: {v['check']}: {v['detail']}"
            for v in report.registry_violations
        ]
    else:
        lines.append("registry: lifecycle doctor finds every invariant held in dev and prod")
    lines.append(f"Workspaces and outputs in {report.work_dir} ({report.seconds:.0f}s in all)")
    return "\n".join(lines)


@cli.command("train")
@click.option(
    "--out-dir",
    default="notebook-output",
    show_default=True,
    help="Folder for model.joblib and the CSVs.",
)
@click.option(
    "--dataset",
    default="breast_cancer",
    show_default=True,
    type=click.Choice(["breast_cancer", "wine", "diabetes"]),
)
@click.option(
    "--algorithm", default="logreg", show_default=True, type=click.Choice(["logreg", "forest"])
)
@click.option(
    "--c",
    "c",
    default=1.0,
    show_default=True,
    type=float,
    help="Inverse regularisation of the linear model.",
)
@click.option(
    "--n-estimators",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Trees of the forest.",
)
@click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Random seed."
)
@click.option("--no-log", is_flag=True, help="Do not log the training run to the workspace.")
@workspace_option
@json_option
@pass_state
def train_cmd(
    state: State,
    out_dir: str,
    dataset: str,
    algorithm: str,
    c: float,
    n_estimators: int,
    seed: int,
    no_log: bool,
    workspace: str | None,
    as_json: bool,
) -> None:
    """Train the notebook scenario's model and leave what a notebook leaves behind.

    Writes model.joblib (the file users hand over), sample.csv and holdout.csv (with a
    'target' column), and logs params, metrics and the model to the workspace.

    \b
    Example:
      lifecycle train --out-dir nb --dataset breast_cancer -w dev
      lifecycle import notebook nb/model.joblib --name churn --sample nb/sample.csv --target target --trust-pickle
    """
    from lifecycle.cli.train import train

    ws = None if no_log else state.workspace_obj(workspace)
    result = train(
        out_dir,
        ws=ws,
        dataset=dataset,
        algorithm=algorithm,
        c=c,
        n_estimators=int(n_estimators),
        seed=int(seed),
    )
    emit(
        result.to_dict(),
        as_json,
        lambda r: "\n".join(
            [
                f"trained {r['algorithm']} on {r['dataset']}: "
                + ", ".join(f"{k}={v:.4f}" for k, v in r["metrics"].items()),
                f"model file: {r['joblib_path']}",
                f"sample: {r['sample_csv']}",
                f"holdout: {r['holdout_csv']}",
            ]
            + ([f"run: {r['run_id']}"] if r["run_id"] else [])
            + [
                "import it with its training run's metrics:",
                f"  lifecycle import notebook {r['joblib_path']} --name NAME --sample "
                f"{r['sample_csv']} --target target"
                + (f" --run-id {r['run_id']}" if r["run_id"] else "")
                + (f" -w {ws.name}" if ws is not None and (workspace or state.workspace) else "")
                + " --trust-pickle",
            ]
        ),
    )
