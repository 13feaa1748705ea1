"""The CLI's conventions: help everywhere, one-line errors, exit codes, --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from lifecycle.cli import cli


def _all_commands(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        out.append(((*prefix, name), cmd))
        if isinstance(cmd, click.Group):
            out.extend(_all_commands(cmd, (*prefix, name)))
    return out


def test_every_command_has_help_with_an_example() -> None:
    runner = CliRunner()
    for path, cmd in _all_commands(cli):
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, path
        assert cmd.help and "Example" in cmd.help, f"{' '.join(path)} has no example in its help"


def test_workspaces_json(project_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["workspaces", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["default"] == "dev"
    assert [w["name"] for w in data["workspaces"]] == ["dev", "prod"]
    assert all(
        set(w) == {"name", "tracking_uri", "registry_uri", "reachable"} for w in data["workspaces"]
    )


def test_library_error_is_one_line_exit_1(project_dir: Path) -> None:
    (project_dir / "lifecycle.yaml").write_text("default: nowhere\n")
    result = CliRunner().invoke(cli, ["workspaces"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: Default workspace 'nowhere' in "
        f"'{project_dir / 'lifecycle.yaml'}' is not defined. Known workspaces: dev, prod"
    ]


def test_usage_error_exits_2(project_dir: Path) -> None:
    assert CliRunner().invoke(cli, ["workspaces", "--bogus"]).exit_code == 2


def test_python_dash_m(project_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lifecycle", "workspaces", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["default"] == "dev"


def test_process_exit_keeps_code_and_output(project_dir: Path) -> None:
    """The command ends without the interpreter's teardown: exit code and output intact."""
    (project_dir / "lifecycle.yaml").write_text("default: nowhere\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lifecycle", "workspaces"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.endswith("Known workspaces: dev, prod\n")


def test_fast_exit_waits_for_other_threads() -> None:
    """With another thread alive the normal exit (which joins it) is left to Python."""
    import threading

    from lifecycle.cli import _exit_now

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        _exit_now(SystemExit(0))  # returns instead of ending the process
    finally:
        stop.set()
        worker.join()


def test_fast_exit_abandons_daemon_threads(tmp_path: Path) -> None:
    """Daemon threads (MLflow's telemetry consumers) do not keep a command on the slow exit:
    exit handlers run, the code is kept, and nothing after the call runs."""
    script = tmp_path / "exit_with_daemon.py"
    marker = tmp_path / "atexit-ran"
    script.write_text(
        "import atexit, pathlib, threading\n"
        "from lifecycle.cli import _exit_now\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
        "threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
        "_exit_now(SystemExit(3))\n"
        "print('returned')\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 3, proc.stderr
    assert "returned" not in proc.stdout
    assert marker.read_text() == "yes"


def test_global_options_are_accepted_after_the_subcommand() -> None:
    from lifecycle.cli import hoist_global_options

    assert hoist_global_options(["transition", "churn", "2", "Production", "--debug"]) == [
        "--debug",
        "transition",
        "churn",
        "2",
        "Production",
    ]
    assert hoist_global_options(
        ["score", "m", "in.csv", "-v", "--config", "c.yaml", "-w", "p"]
    ) == [
        "-v",
        "--config",
        "c.yaml",
        "score",
        "m",
        "in.csv",
        "-w",
        "p",
    ]
    # Before the subcommand they stay where they are; after "--" nothing moves.
    assert hoist_global_options(["--config", "c.yaml", "workspaces", "--", "--debug"]) == [
        "--config",
        "c.yaml",
        "workspaces",
        "--",
        "--debug",
    ]


def test_debug_after_the_subcommand_through_the_console_script(project_dir: Path) -> None:
    import subprocess
    import sys

    lifecycle = Path(sys.executable).parent / "lifecycle"
    proc = subprocess.run(
        [str(lifecycle), "transition", "nope", "1", "Production", "--debug"],
        cwd=project_dir,
        capture_output=True,
        text=True,
    )
    assert "No such option" not in proc.stderr
    assert proc.returncode == 1 and "Traceback" in proc.stderr  # --debug took effect


def test_workspaces_takes_w_like_every_command(project_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["workspaces", "-w", "prod", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["default"] == "prod"
    bad = CliRunner().invoke(cli, ["workspaces", "-w", "nowhere"])
    assert bad.exit_code != 0 and "nowhere" in bad.stderr


def test_train_forest_as_offered_in_help(project_dir: Path) -> None:
    """``--algorithm forest`` logs a skops model whose tree type is declared trusted."""
    result = CliRunner().invoke(
        cli, ["train", "--algorithm", "forest", "--n-estimators", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    import mlflow.pyfunc

    from lifecycle.base.workspaces import load_config, use_workspace

    with use_workspace(load_config(None).get("dev")):
        model = mlflow.pyfunc.load_model(f"runs:/{out['run_id']}/model")
    assert len(model.predict(model.input_example)) == len(model.input_example)


def test_the_command_line_starts_without_the_heavy_libraries() -> None:
    """Every command pays the CLI's own imports: pandas, scikit-learn and MLflow are
    imported by the commands that use them, not at start (pandas alone cost ~0.25 s)."""
    code = (
        "import sys, lifecycle.cli; "
        "print(sorted(m for m in ('pandas', 'sklearn', 'mlflow', 'skops') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
