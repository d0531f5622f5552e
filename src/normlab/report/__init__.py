"""Turning a run folder into figures and a report."""
