"""Wav2Lip adapter: train a user's unmodified Wav2Lip checkout with the UniSync loss (see README.md here).

    python -m integrations.wav2lip.check --wav2lip-root ~/Wav2Lip
    python -m integrations.wav2lip.train --wav2lip-root ~/Wav2Lip --expert E -- --data_root D --checkpoint_dir C
"""
