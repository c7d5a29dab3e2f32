"""Experiments: ``cart run`` (train, evaluate, analyse and compare methods over seeds), ``cart compare`` (any two
methods of a finished run, from its saved per-pair test scores), ensemble training and the bound sweep (eq. 4-5
across training-set sizes)."""
