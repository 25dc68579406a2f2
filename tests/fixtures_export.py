"""Session fixtures for export results (owned by the export stage)."""
