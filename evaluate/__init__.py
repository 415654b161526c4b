"""Scoring predicted emotion labels against ground truth (light dependencies only)."""
