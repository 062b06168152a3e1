"""Train a user's unmodified Wav2Lip checkout with the UniSync loss as its lip-sync expert.

    python -m integrations.wav2lip.train --wav2lip-root ~/Wav2Lip [--script wav2lip|hq] --expert mel_rgb.safetensors \\
        [--sync-weight 0.03 [--sync-from-step 0]] [--also-log-wav2lip-expert lipsync_expert.pth] \\
        -- --data_root lrs2_preprocessed/ --checkpoint_dir checkpoints/   # Wav2Lip's own arguments

The training script is imported as a module with its own arguments, the sync expert is swapped
(``integrations.wav2lip.patch``), the shims are applied (``integrations.wav2lip.shims``), and the
script's ``if __name__ == "__main__":`` block runs unchanged (``integrations.wav2lip.script``).
Usage errors print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import os
import random
import sys
import types
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from integrations.wav2lip import shims
from integrations.wav2lip.checkout import CheckoutError, checkout_root, inspect_checkout, script_path
from integrations.wav2lip.patch import Options, Schedule, UniSyncPatch
from integrations.wav2lip.script import imported_script, run_main_block
from unisync_loss import ExpertFileError, UniSyncLoss

PLACEHOLDER_NOTE = "the UniSync expert replaces --syncnet_checkpoint_path"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m integrations.wav2lip.train",
        description="Run Wav2Lip's own training script with a UniSync (mel x rgb) expert as the lip-sync loss. "
                    "Arguments after `--` go to the Wav2Lip script unchanged.",
    )
    parser.add_argument("--wav2lip-root", required=True, help="root of the Wav2Lip checkout (holds hparams.py, audio.py, models/)")
    parser.add_argument("--script", choices=("wav2lip", "hq"), default="wav2lip",
                        help="wav2lip_train.py (default) or hq_wav2lip_train.py (with the visual quality discriminator)")
    parser.add_argument("--expert", default=None,
                        help="UniSync mel x rgb expert file; 'procedural' = the small bundled demo expert; "
                             "default: the cached $UNISYNC_HOME/experts/mel_rgb.safetensors")
    parser.add_argument("--sync-weight", type=float, default=None,
                        help="fixed syncnet_wt instead of Wav2Lip's gate (0.01 / 0.03 once the eval sync loss < 0.75)")
    parser.add_argument("--sync-from-step", type=int, default=None, help="with --sync-weight: weight 0 before this global step (default 0)")
    parser.add_argument("--also-log-wav2lip-expert", default=None, metavar="PATH",
                        help="Wav2Lip's SyncNet_color checkpoint (lipsync_expert.pth), scored beside UniSync for the logs only")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers of both loaders (default: min(hparams.num_workers, CPU count); upstream hard-codes 4 for eval)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many generator steps (default: run as upstream, forever)")
    parser.add_argument("--eval-batches", type=int, default=None,
                        help="end each evaluation after N batches (upstream: 700 in wav2lip, up to 302 in hq); for CPU tries")
    parser.add_argument("--hparams", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override Wav2Lip hparams before the run, e.g. batch_size=4 checkpoint_interval=1000")
    parser.add_argument("--seed", type=int, default=None, help="seed random, numpy and torch before the script is imported")
    parser.add_argument("--log-every", type=int, default=50, help="print the mean training sync losses every N steps (default 50)")
    parser.add_argument("--time-sync", action="store_true",
                        help="time each expert's forward + backward inside every training step (needs --also-log-wav2lip-expert)")
    return parser


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Adapter arguments before the first ``--``, Wav2Lip's after it."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def option_value(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name X`` or ``--name=X`` in an argument list, else ``None``."""
    for index, item in enumerate(argv):
        if item == name and index + 1 < len(argv):
            return argv[index + 1]
        if item.startswith(name + "="):
            return item.split("=", 1)[1]
    return None


def filelists_home(data_root: str | None) -> Path:
    """The folder whose ``filelists/`` holds train.txt and val.txt: ``DATA_ROOT`` first, then the current directory."""
    if data_root is None:
        return Path.cwd()  # Wav2Lip's parser reports the missing --data_root itself
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise CheckoutError(f"--data_root {root.resolve()}: no such directory")
    for home in (root, Path.cwd()):
        if all((home / "filelists" / f"{split}.txt").is_file() for split in ("train", "val")):
            return home.resolve()
    raise CheckoutError(
        f"--data_root {root.resolve()} has no filelists/train.txt and filelists/val.txt, nor has the current directory "
        "(Wav2Lip reads filelists/{split}.txt, lines 'dir/vid'; `python -m pretrain.synth` writes them into the data root)"
    )


def parse_hparams(items: Sequence[str], hparams: object) -> dict[str, object]:
    """``KEY=VALUE`` strings -> values (Python literals, else strings); keys must exist in Wav2Lip's hparams."""
    known = getattr(hparams, "data", {})
    parsed = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise CheckoutError(f"--hparams expects KEY=VALUE, got {item!r}")
        if key not in known:
            raise CheckoutError(f"--hparams {key}: not a Wav2Lip hparam; valid keys: {', '.join(sorted(known))}")
        try:
            parsed[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed[key] = text
    return parsed


def load_sync_loss(expert: str | None) -> UniSyncLoss:
    """The mel x rgb UniSync loss for Wav2Lip's frames (BGR in [0, 1]); ``CheckoutError`` for a bad expert."""
    try:
        return UniSyncLoss("mel", "rgb", weights=expert, channel_order="bgr", value_range=(0.0, 1.0))
    except ExpertFileError as error:
        raise CheckoutError(f"--expert: {error}") from error


def load_wav2lip_expert(path: str, expert: torch.nn.Module) -> torch.nn.Module:
    """Wav2Lip's SyncNet_color weights from ``path`` (``{"state_dict": ...}``, ``module.`` prefixes) into ``expert``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckoutError(f"--also-log-wav2lip-expert {file.resolve()}: no such file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)["state_dict"]
        expert.load_state_dict({key.replace("module.", ""): value for key, value in state.items()})
    except Exception as error:  # torch raises several kinds for a file that is not such a checkpoint
        raise CheckoutError(f"--also-log-wav2lip-expert {file}: not a Wav2Lip SyncNet_color checkpoint ({error})") from error
    return expert.requires_grad_(False).eval()


def fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``model`` (names, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def preflight(module: types.ModuleType, home: Path, data_root: str) -> None:
    """Read one clip's audio the way Wav2Lip's dataset does; its errors would otherwise loop forever."""
    window = module.syncnet_T
    usable = {}
    for split in ("train", "val"):
        videos = [Path(v) for v in module.get_image_list(data_root, split)]
        usable[split] = [v for v in videos if (v / "audio.wav").is_file() and len(list(v.glob("*.jpg"))) > 3 * window]
        if not usable[split]:
            raise CheckoutError(
                f"{home / 'filelists' / (split + '.txt')}: none of its {len(videos)} videos under {data_root} has audio.wav and "
                f"more than {3 * window} frames; Wav2Lip's dataset would loop forever"
            )
    wav_path = usable["train"][0] / "audio.wav"
    try:
        module.audio.melspectrogram(module.audio.load_wav(str(wav_path), module.hparams.sample_rate))
    except Exception as error:  # whatever it is, Wav2Lip's `except Exception: continue` would hide it
        raise CheckoutError(f"Wav2Lip's audio.melspectrogram fails on {wav_path}: {type(error).__name__}: {error} "
                            "(its dataset would swallow this into an endless loop)") from error


def apply_shims(stack: contextlib.ExitStack, module: types.ModuleType) -> list[str]:
    """Apply the shims this checkout needs (see ``integrations.wav2lip.shims``); returns their names."""
    applied = []
    librosa = getattr(module.audio, "librosa", None)
    if librosa is not None and shims.librosa_shim_needed(librosa.filters.mel):
        shims.set_attribute(stack, module.audio, "librosa", shims.librosa_view(librosa))
        applied.append("librosa")
    discriminator = getattr(module, "Wav2Lip_disc_qual", None)
    if shims.cuda_shim_needed(discriminator):
        method = shims.without_cuda(discriminator.perceptual_forward, module.device)
        shims.set_attribute(stack, discriminator, "perceptual_forward", method)
        applied.append("cuda")
    return applied


def run(argv: Sequence[str]) -> None:
    """Validate everything, then run the Wav2Lip script with the UniSync patch. Raises ``CheckoutError``."""
    own, wav2lip_args = split_argv(argv)
    args = build_parser().parse_args(own)
    if args.sync_from_step is not None and args.sync_weight is None:
        raise CheckoutError("--sync-from-step needs --sync-weight (without it Wav2Lip's 0.75 gate sets the weight)")
    if args.time_sync and args.also_log_wav2lip_expert is None:
        raise CheckoutError("--time-sync compares against Wav2Lip's expert: give --also-log-wav2lip-expert PATH")
    root = checkout_root(args.wav2lip_root)
    script = script_path(root, args.script)
    inspection = inspect_checkout(root, args.script)
    if not inspection.runnable:
        raise CheckoutError(f"the adapter cannot run {script}: {inspection.problems()[0]} "
                            f"(python -m integrations.wav2lip.check --wav2lip-root {root} --script {args.script})")
    data_root = option_value(wav2lip_args, "--data_root")
    home = filelists_home(data_root)
    sync_loss = load_sync_loss(args.expert)
    wav2lip_args = supply_syncnet_checkpoint(wav2lip_args, args.also_log_wav2lip_expert, sync_loss.source)
    if args.seed is not None:
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
    print(f"[unisync] Wav2Lip checkout {root} (commit {inspection.commit or 'unknown: not a git checkout'}), {script.name}; "
          f"expert {sync_loss.source}", flush=True)
    with contextlib.ExitStack() as stack:
        module = stack.enter_context(imported_script(root, script, wav2lip_args))
        window = sync_loss.expert.config.window
        if module.syncnet_T != window:
            raise CheckoutError(f"--expert scores {window}-frame windows, {script.name} uses syncnet_T = {module.syncnet_T}")
        overrides = parse_hparams(args.hparams, module.hparams)
        for key, value in overrides.items():
            module.hparams.set_hparam(key, value)
        applied = apply_shims(stack, module)
        wav2lip_expert = None
        if args.also_log_wav2lip_expert is not None:
            wav2lip_expert = load_wav2lip_expert(args.also_log_wav2lip_expert, module.syncnet)
        sync_loss.to(module.device)
        workers = args.workers if args.workers is not None else min(module.hparams.num_workers, os.cpu_count() or 1)
        module.hparams.set_hparam("num_workers", workers)
        options = Options(Schedule(args.sync_weight, args.sync_from_step or 0), workers, args.max_steps, args.eval_batches,
                          args.log_every, args.time_sync)
        patch = UniSyncPatch(module, sync_loss, options, home, wav2lip_expert)
        patch.install(stack)
        preflight(module, home, data_root)
        print(f"[unisync] shims applied: {', '.join(applied) or 'none needed'}; workers {workers}; "
              + ("sync weight: Wav2Lip's gate (eval sync loss < 0.75)" if args.sync_weight is None else
                 f"sync weight {args.sync_weight} from step {args.sync_from_step or 0}"), flush=True)
        before = fingerprint(sync_loss.expert)
        run_main_block(module, script)
        report(patch, sync_loss, before)


def supply_syncnet_checkpoint(wav2lip_args: list[str], wav2lip_expert: str | None, unisync_source: str) -> list[str]:
    """Wav2Lip's required ``--syncnet_checkpoint_path``: the logging expert, else a value nothing will load."""
    given = option_value(wav2lip_args, "--syncnet_checkpoint_path")
    if given is not None:
        if wav2lip_expert is None:
            print(f"[unisync] --syncnet_checkpoint_path {given} is not used ({PLACEHOLDER_NOTE}); "
                  "pass --also-log-wav2lip-expert to log its loss too", flush=True)
        return wav2lip_args
    return [*wav2lip_args, "--syncnet_checkpoint_path", wav2lip_expert or unisync_source]


def report(patch: UniSyncPatch, sync_loss: UniSyncLoss, before: str) -> None:
    """Final lines: the expert's state, and the timings with --time-sync."""
    after = fingerprint(sync_loss.expert)
    mode = "train" if sync_loss.expert.training else "eval"
    print(f"[unisync] UniSync expert after the run: {mode} mode, weights and buffers "
          f"{'bit-identical' if after == before else 'CHANGED'} (sha256 {after[:16]})", flush=True)
    summary = patch.timing_summary()
    if summary is not None:
        print("[unisync] timing, medians over {steps} steps: step {step_s:.3f} s; sync forward+backward UniSync {unisync_s:.4f} s, "
              "Wav2Lip expert {wav2lip_s:.4f} s, paired ratio {ratio:.3f}; share of a step UniSync {unisync_share:.1%}, "
              "Wav2Lip expert {wav2lip_share:.1%}".format(**summary), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        run(sys.argv[1:] if argv is None else argv)
    except CheckoutError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
