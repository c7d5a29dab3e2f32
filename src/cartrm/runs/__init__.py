"""Run folders and their identity: content addresses of settings and inputs (:mod:`.identity`), a folder owned by one
training run (:mod:`.folder`), the stages of ``cart run`` that are skipped when their inputs did not change
(:mod:`.stage`) and the paths of a run folder, named once (:mod:`.layout`)."""

from cartrm.runs.folder import RunFolder, lock_folder
from cartrm.runs.identity import KEYED_WHEN_SET, digest, key_dump, keyed_when_set, run_identity, stage_key

__all__ = [
    "KEYED_WHEN_SET",
    "RunFolder",
    "digest",
    "key_dump",
    "keyed_when_set",
    "lock_folder",
    "run_identity",
    "stage_key",
]
