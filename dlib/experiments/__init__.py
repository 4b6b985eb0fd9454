"""Experiments: the ablation tables as data and their runs, the analysis, figures and convergence criterion, statistics
(paired t-intervals), the paper's claims judged from them, the compute budget, the stand-ins' training, and the
results files with provenance."""
