"""UniSync in GeneFace's audio-to-motion training, on an unmodified GeneFace checkout (run from this checkout).

Modules, in the order a reader meets them:

* ``upstream``: the GeneFace checkout: root validation, commit, every upstream name the adapter relies on.
* ``shims``: run-time fixes that let GeneFace's training imports work on today's software (listed by name).
* ``syncnet``: :class:`UniSyncSyncNetTask`, the stand-in for GeneFace's ``SyncNetTask`` (same ``run_model``
  contract, a frozen UniSync expert inside).
* ``tasks``: GeneFace task subclasses that build the stand-in instead of GeneFace's expert
  (imports GeneFace: only importable with the checkout on ``sys.path``).
* ``train`` / ``check``: the launcher and the readiness check (``python -m integrations.geneface.<tool>``).
* ``corpus``: the procedural corpus in GeneFace's conventions (samples, binarised dataset, expert training data).
"""
