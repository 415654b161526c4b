"""The HTML build report: overview, plots and a sample gallery of a build or a downloaded release."""
