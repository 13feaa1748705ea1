"""Monitoring: baselines stored with model versions, drift against them, reports, policies.

Public surface:

- :func:`attach_baseline` / :func:`load_baseline` (:mod:`.profile`): the baseline profile
  stored with a model version;
- :func:`lifecycle.monitor.monitor.monitor` / :class:`MonitorResult` (:mod:`.monitor`): compare new data, log a run,
  act on drift; :func:`baseline_from_files` profiles CSV/Parquet files;
- :func:`load_policy` / :class:`Policy` (:mod:`.policy`): thresholds and actions;
- :func:`write_report` (:mod:`.report`): the static HTML report;
- :func:`lifecycle.monitor.status.status`: every model of every workspace at a glance.

``monitor`` and ``status`` are not re-exported here: the names would shadow their modules.
"""

from __future__ import annotations

from lifecycle.monitor.drift import Thresholds, compare
from lifecycle.monitor.monitor import baseline_from_files, read_inputs
from lifecycle.monitor.policy import Policy, default_policy, load_policy
from lifecycle.monitor.profile import attach_baseline, build_profile, load_baseline
from lifecycle.monitor.report import write_report
from lifecycle.monitor.result import MonitorResult

__all__ = [
    "MonitorResult",
    "Policy",
    "Thresholds",
    "attach_baseline",
    "baseline_from_files",
    "build_profile",
    "compare",
    "default_policy",
    "load_baseline",
    "load_policy",
    "read_inputs",
    "write_report",
]
