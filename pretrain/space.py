"""Evaluate the embedding space of a joint expert: do two representations of the same window land together?

    python -m pretrain.space --expert E --data procedural --corpus-seeds 1-8 [--pairs rgb:landmarks,mel:hubert]
        [--tolerance 1] [--max-clips N] [--out FILE.json]

Cross-representation retrieval, for two representations X and Y of one modality that the expert
has heads for (e.g. visual ``3dmm`` and ``landmarks``, or audio ``mel`` and ``hubert``): in each
clip, every window start valid for both is embedded through X's head and through Y's head (then
the shared ε2 / ε4, eval mode). X's window ``i`` retrieves the Y window ``j`` most similar to it
among the clip's windows, similarity being the geometry p_sync uses, ``cos(ReLU(x), ReLU(y))``
(``unisync_loss.model.sync_prob``). It is correct when ``j == i`` (``exact``) or
``|j - i| <= tolerance`` (``accuracy``, the same ±1 frame as the sync-accuracy protocol).
Accuracy is averaged per clip, then per speaker; reported as the mean over speakers ± its
standard error (``pretrain.evaluate.speaker_statistics``), with the chance level of a uniform
guess among the clip's windows. Retrieval is measured in both directions (X -> Y and Y -> X).

Unseen-pair scoring (a pair of heads no training step combined, e.g. mel x 3dmm from an expert
trained on mel x landmarks and hubert x 3dmm) needs nothing new: ``pretrain.evaluate`` scores any
pair of heads an expert holds (``--audio mel --visual 3dmm``), with the usual sync-accuracy protocol.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from pretrain.data import ClipSource
from pretrain.evaluate import parse_seeds, resolve_data, speaker_statistics, write_json
from unisync_loss.experts import load_expert
from unisync_loss.model import UniSync, sync_prob
from unisync_loss.progress import progress as progress_bar
from unisync_loss.representations import modality
from unisync_loss.windows import cut_windows


def clip_embeddings(model: UniSync, clip: dict[str, Tensor], representation: str, count: int, batch_size: int = 256) -> Tensor:
    """Embeddings ``(count, embed_dim)`` of the windows starting at frames ``0 .. count-1`` of one clip (eval mode)."""
    window = model.config.window
    embed = model.embed_audio if modality(representation) == "audio" else model.embed_visual
    parts = []
    for first in range(0, count, batch_size):
        starts = list(range(first, min(count, first + batch_size)))
        parts.append(embed(cut_windows(clip[representation], representation, starts, window), representation))
    return torch.cat(parts)


def retrieval(
    model: UniSync,
    source: ClipSource,
    query: str,
    target: str,
    *,
    tolerance: int = 1,
    indices: Sequence[int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Cross-representation retrieval ``query`` -> ``target`` over the clips ``indices`` of ``source`` (see the module docstring).

    Returns ``{"query", "target", "accuracy", "exact", "chance", "speaker_se", "speakers",
    "clips", "windows", "per_speaker": {speaker: accuracy}}``; ``accuracy`` and ``exact`` are means
    over speakers. ``ValueError`` when the two are not of one modality or the expert lacks a head.
    """
    if modality(query) != modality(target) or query == target:
        raise ValueError(f"retrieval needs two different representations of one modality, got {query!r} and {target!r}")
    heads = model.audio_heads if modality(query) == "audio" else model.visual_heads
    if query not in heads or target not in heads:
        raise ValueError(f"retrieval {query} -> {target}: the expert has {model.describe_heads()}")
    indices = range(len(source)) if indices is None else indices
    window = model.config.window
    per_clip = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for index in progress_bar(indices, desc=f"retrieval {query}->{target}", disable=not progress):
                count = source.window_count(index, [query, target], window)
                clip = source.load(index, [query, target])
                queries = clip_embeddings(model, clip, query, count)
                targets = clip_embeddings(model, clip, target, count)
                similarity = sync_prob(queries[:, None, :].expand(-1, count, -1), targets[None, :, :].expand(count, -1, -1))
                found = similarity.argmax(dim=1)
                distance = (found - torch.arange(count)).abs()
                chance = sum(min(count - 1, i + tolerance) - max(0, i - tolerance) + 1 for i in range(count)) / count**2
                per_clip.append({"speaker": source.records[index].speaker, "accuracy": float((distance <= tolerance).float().mean()),
                                 "exact": float((distance == 0).float().mean()), "chance": chance, "windows": count})
    finally:
        model.train(was_training)
    if not per_clip:
        raise ValueError("retrieval: no clip to evaluate")
    speakers = speaker_statistics(per_clip)
    exact = speaker_statistics([{**record, "accuracy": record["exact"]} for record in per_clip])
    return {
        "query": query, "target": target, "tolerance": tolerance,
        "accuracy": speakers["speaker_accuracy_mean"], "speaker_se": speakers["speaker_accuracy_se"],
        "exact": exact["speaker_accuracy_mean"], "exact_se": exact["speaker_accuracy_se"],
        "chance": sum(r["chance"] for r in per_clip) / len(per_clip),
        "speakers": speakers["speakers"], "clips": len(per_clip), "windows": sum(r["windows"] for r in per_clip),
        "per_speaker": {name: entry["sync_accuracy"] for name, entry in speakers["per_speaker"].items()},
    }


def same_modality_pairs(model: UniSync) -> list[tuple[str, str]]:
    """Every unordered pair of heads of one modality, e.g. ``[("mel", "hubert"), ("3dmm", "landmarks")]``."""
    pairs = []
    for heads in (list(model.audio_heads), list(model.visual_heads)):
        pairs += [(a, b) for i, a in enumerate(heads) for b in heads[i + 1:]]
    return pairs


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """``"rgb:landmarks,mel:hubert"`` -> ``[("rgb", "landmarks"), ("mel", "hubert")]``."""
    pairs = [tuple(part.split(":")) for part in text.split(",") if part.strip()]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"--pairs must look like rgb:landmarks,mel:hubert, got {text!r}")
    return pairs  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m pretrain.space", description=__doc__.split("\n\n")[0])
    parser.add_argument("--expert", required=True, help="a joint expert file (or a name `unisync experts` lists)")
    parser.add_argument("--data", required=True, help="Wav2Lip-layout folder, procedural[:preset], or a training config YAML")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--corpus-seeds", type=parse_seeds, metavar="SEEDS", help="procedural data: pool these corpus seeds (1-8: 24 test speakers)")
    parser.add_argument("--pairs", type=parse_pairs, help="X:Y representation pairs (default: every pair of heads of one modality)")
    parser.add_argument("--tolerance", type=int, default=1, help="a retrieval is correct within ±this many frames")
    parser.add_argument("--max-clips", type=int, help="only the first N clips")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    try:
        model = load_expert(args.expert)
        source = resolve_data(args.data, args.split, model.expert_header, args.corpus_seeds)
        indices = range(len(source) if args.max_clips is None else min(args.max_clips, len(source)))
        pairs = args.pairs or same_modality_pairs(model)
        if not pairs:
            raise ValueError(f"{args.expert}: has one head per modality ({model.describe_heads()}); nothing to retrieve across")
        results = [retrieval(model, source, a, b, tolerance=args.tolerance, indices=indices, progress=True)
                   for x, y in pairs for a, b in ((x, y), (y, x))]
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    for r in results:
        print(f"{r['query']:>9} -> {r['target']:<9} retrieval (±{r['tolerance']}) {r['accuracy']:.3f} ± {r['speaker_se'] or 0:.3f}, "
              f"exact {r['exact']:.3f}, chance {r['chance']:.3f} ({r['speakers']} speakers, {r['clips']} clips)")
    if args.out:
        write_json({"expert": str(args.expert), "data": args.data, "results": results}, args.out)
    return results


if __name__ == "__main__":
    main()
