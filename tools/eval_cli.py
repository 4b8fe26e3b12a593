"""The command-line plumbing the evaluation tools share: common arguments, checks, and the JSON report."""
import argparse
import json
import sys
from pathlib import Path

from checkpoint import CheckpointError
from config import ConfigError
from errors import one_line
from media import MediaError, VideoReadError, atomic_file, check_not_an_input, check_writable


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


def inputs_of(args):
    """The files an evaluation reads that its ``--out`` may not overwrite."""
    return {"--config": args.config, "--checkpoint": args.checkpoint}


def frame_size(config):
    """The (height, width) frames are read at: the config's ``frame_shape``, or None (``null``: as stored)."""
    frame_shape = config.get("dataset_params", {}).get("frame_shape")
    return tuple(frame_shape[:2]) if frame_shape else None


def check_out(out, inputs=None):
    """Refuse an ``--out`` the JSON cannot be written to, or that names an input ({what: path}), before an
    evaluation of minutes runs."""
    if Path(out).is_dir():
        raise EvalError(f"{out}: --out is a folder; expected the path of a JSON file")
    try:
        check_not_an_input(out, inputs or {})
        check_writable(out)
    except MediaError as error:
        raise EvalError(str(error)) from None


def write_atomically(out, text):
    """``text`` to ``out``: a previous file is replaced whole or not at all."""
    with atomic_file(out) as temporary:
        temporary.write_text(text)


def report(evaluate, out, inputs=None):
    """Run ``evaluate()``, print its results as JSON (and write them to ``out``, which may not be one of ``inputs``,
    {what: path}); returns the exit code, with problems a user can fix as one ``error:`` line."""
    try:
        if out:
            check_out(out, inputs)
        results = evaluate()
    except (EvalError, ConfigError, CheckpointError, VideoReadError, ValueError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        try:
            write_atomically(out, text + "\n")
        except OSError as error:  # the results are printed above: nothing is lost
            print(f"error: {out}: cannot write the results: {error.strerror or error}", file=sys.stderr)
            return 1
    return 0
