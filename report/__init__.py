"""The HTML build report: overview, plots and a sample gallery of a build or a downloaded release."""

from emer_builder.report.write import write_report

__all__ = ["write_report"]
