"""The stages of one seed of ``cart run``, each a module: training (single models and ensembles), tuning,
ablation, analysis (phases 1–2 on the baseline), evaluation on the test split, best-of-n and circuit stability.
Each reads the seed's :class:`~cartrm.experiments.stages.context.SeedContext` and is a
:class:`cartrm.runs.stage.Stage`: skipped when its inputs did not change."""
