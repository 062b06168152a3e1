"""Two CPU processes with ``accelerate launch``: disjoint data, identical weights, a usable expert.

In accelerate 1.x ``accelerate launch --cpu --num_processes 2`` starts a single process (its simple
launcher spawns several CPU processes only through mpirun), so the test launches torchrun-style with
``--multi_gpu`` and ``ACCELERATE_USE_CPU=true``: two processes on the gloo backend.

The encoders use GroupNorm; the embedding standardisation all-reduces its batch statistics
(unisync_loss.model.EmbeddingNorm), so after the gradient all-reduce every rank holds
bit-identical parameters and buffers.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from pretrain.config import load_config
from pretrain.data import open_source
from pretrain.evaluate import sync_accuracy
from unisync_loss.experts import load_expert

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_disjoint_samples_identical_parameters(tmp_path):
    out = tmp_path / "ddp"
    steps, batch = 12, 16
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "pretrain.train", "--config", str(REPO / "pretrain" / "configs" / "tiny.yaml"),
        f"output_dir={out}", f"optim.steps={steps}", f"optim.batch_size={batch}", "optim.grad_accum=2",
        "eval.every=6", "checkpoint.every=6", "debug.dump_ranks=true",
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "UNISYNC_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    ranks = [json.loads((out / "debug" / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    ids = [set(r["sample_ids"]) for r in ranks]
    micro_steps = steps * 2
    assert all(len(r["sample_ids"]) == len(i) == micro_steps * batch // 2 for r, i in zip(ranks, ids))
    assert ids[0].isdisjoint(ids[1])
    assert ids[0] | ids[1] == set(range(micro_steps * batch))
    assert ranks[0]["parameters"]["sha256"] == ranks[1]["parameters"]["sha256"]
    assert ranks[0]["parameters"]["sums"] == ranks[1]["parameters"]["sums"]

    config = load_config(out / "config.yaml")
    result = json.loads((out / "result.json").read_text())
    expert = load_expert(result["expert"])
    accuracy = sync_accuracy(expert, open_source(config.data, "test"), config.audio, config.visual, indices=range(2))
    assert 0.0 <= accuracy <= 1.0
    assert "held-out (test speakers) sync accuracy" in done.stdout
