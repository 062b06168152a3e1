"""Pieces of ``benchmarks/generator_sync.py``: does the UniSync loss make a generator's lips more in sync?

    experts.py   the three sync experts of each generator (SyncNet-recipe loss, UniSync-recipe loss,
                 independent evaluator), trained with ``pretrain.train`` on one corpus on disk
    motion.py    the GeneFace-like motion generator (HuBERT stand-in -> 3DMM expression coefficients)
                 and its training with reconstruction + optional sync loss
    image.py     the Wav2Lip-like image generator (mel + reference + masked target -> the face's lower
                 half), its training, and the mouth reader that reads a mouth track off generated frames
    runs.py      one generator run (train, generate, score), as a worker process executes it
    parallel.py  independent trainings side by side in worker processes, results independent of their number
    scoring.py   ground-truth measures (mouth error, best-correlation lag, oracle sync accuracy),
                 the evaluator's sync accuracy and LSE-D / LSE-C analogues, reconstruction error
    report.py    mean +- spread over seeds, the Markdown / JSON table and the README figure
"""
