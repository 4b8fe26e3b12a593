"""The command-line plumbing the evaluation tools share: common arguments, checks, and the JSON report."""
import argparse
import json
import sys
from pathlib import Path

from checkpoint import CheckpointError
from config import ConfigError
from errors import one_line
from media import VideoReadError


class EvalError(RuntimeError):
    """Data or a checkpoint an evaluation cannot use; the message names the file."""


def make_parser(doc, checkpoint_help):
    """An argument parser with --config, --checkpoint, --data and --device; the tool adds its own."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="model config, e.g. config/puppets64.yaml")
    parser.add_argument("--checkpoint", required=True, help=checkpoint_help)
    parser.add_argument("--data", default="data/puppets", help="a set made by tools/make_puppets.py (default: "
                                                               "data/puppets)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    return parser


def parse_with_out(parser, argv, positive):
    """Add --out, parse, and check that the options named in ``positive`` are at least 1 when given."""
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    for name in positive:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def report(evaluate, out):
    """Run ``evaluate()``, print its results as JSON (and write them to ``out``); returns the exit code, with
    problems a user can fix as one ``error:`` line."""
    try:
        results = evaluate()
    except (EvalError, ConfigError, CheckpointError, VideoReadError, ValueError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    return 0
