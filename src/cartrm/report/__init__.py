"""The experiment's results (``results.json``) and its self-contained HTML report."""
