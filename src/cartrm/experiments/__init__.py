"""Experiments: ``cart run`` (train, evaluate, analyse and compare methods over seeds), ensemble training and the
bound sweep (eq. 4-5 across training-set sizes)."""
