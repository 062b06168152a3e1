"""Convert a third-party checkpoint once to a safe ``.safetensors`` expert.

    python -m unisync_loss.thirdparty convert wav2lip:checkpoints/lipsync_expert.pth wav2lip_expert.safetensors
    python -m unisync_loss.thirdparty convert syncnet_v2:data/syncnet_v2.model syncnet_v2.safetensors

The checkpoint is read with ``torch.load(weights_only=True)`` (refused if it holds anything but
tensors and plain containers); errors are one line on stderr with exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from unisync_loss.thirdparty.checkpoints import SPEC_PREFIXES, convert_checkpoint


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unisync_loss.thirdparty", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="checkpoint -> .safetensors expert")
    convert.add_argument("spec", help=f"{' or '.join(f'{prefix}:PATH' for prefix in SPEC_PREFIXES)}")
    convert.add_argument("out", help="output path ending in .safetensors")
    args = parser.parse_args(argv)
    try:
        path = convert_checkpoint(args.spec, args.out)
    except ValueError as error:  # ExpertFileError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
