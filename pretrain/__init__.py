"""Pretraining of UniSync sync experts (run from the checkout, not installed).

    python -m pretrain.train --config pretrain/configs/quickstart.yaml       # train, evaluate, export
    accelerate launch -m pretrain.train --config pretrain/configs/mel_rgb.yaml  # same script, many processes
    python -m pretrain.evaluate --expert E --data D                           # AVST sync accuracy
    python -m pretrain.export RUN_DIR                                          # re-export a run's expert

Modules: ``config`` (YAML + overrides), ``data`` (clip sources: Wav2Lip-layout folders, the
procedural corpus), ``pairs`` (positive / negative pair sampling), ``losses`` (BCE + margin),
``train`` (accelerate loop, checkpoints, resume), ``export`` (expert files), ``evaluate``,
``extract`` and ``synth`` (the procedural corpus).
"""
