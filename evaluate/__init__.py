"""Scoring predicted emotion labels against ground truth (light dependencies only: no Beam, no media libraries).

`evaluate(gt, pred, wheel=...)` returns the same dict as `emer evaluate --json`; `evaluate_many` scores
several prediction files against one ground truth; `format_report` / `format_summary` print them.
"""

from emer_builder.evaluate.report import format_report, format_summary
from emer_builder.evaluate.run import TASKS, choose_task, evaluate, evaluate_many, run_evaluate, run_evaluate_many

__all__ = ["TASKS", "choose_task", "evaluate", "evaluate_many", "format_report", "format_summary", "run_evaluate", "run_evaluate_many"]
