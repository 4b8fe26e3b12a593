#!/usr/bin/env python
"""AKD and MKR of generated videos against their ground truth, offline on the CPU (keypoint_metrics.py).

    python tools/eval_metrics.py --target face --reconstruction eval/reconstruction --config config/vox256.yaml
    python tools/eval_metrics.py --target body truth/ generated/          # two videos, or two folders of videos
    python tools/eval_metrics.py --target face real.mp4 fake.mp4 --out metrics.json

A video is a folder of frames, a video file or a strip of square frames side by side; a folder that holds videos
(sub-folders, video files) is compared video by video, matched by name. ``--reconstruction`` takes the folder
``run.py --mode reconstruction`` wrote: its ``png/<video>.png`` strips against the test videos of ``--config``.
The metrics are printed as JSON and written to ``--out`` (default: ``metrics-<target>.json`` in the
reconstruction folder, else in the current folder). The detectors are MediaPipe's models run by LiteRT:
``pip install -r requirements-metrics.txt``.
"""
import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: the project's modules live one folder up
    sys.path.insert(0, str(REPO_ROOT))

from config import ConfigError, load_config  # noqa: E402
from errors import one_line  # noqa: E402
from keypoint_metrics import (MetricsError, evaluate_pairs, evaluate_reconstruction, pairs_of,  # noqa: E402
                              reconstruction_pairs, write_metrics)
from landmarks import TARGETS, DetectorUnavailable, check_available  # noqa: E402
from media import MediaError, check_writable, same_file  # noqa: E402

MAX_THREADS = 1024  # LiteRT crashes (segmentation fault) at 100000


def parse_args(argv=None):
    first_line, _, rest = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(description=first_line, epilog=rest.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", metavar="TRUTH GENERATED",
                        help="the ground-truth video (or folder of videos), then the generated one")
    parser.add_argument("--target", required=True, choices=TARGETS, help="the detector: face (51 iBUG points) "
                                                                          "or body (18 COCO joints)")
    parser.add_argument("--reconstruction", help="a folder run.py --mode reconstruction wrote (needs --config)")
    parser.add_argument("--config", help="with --reconstruction: the config whose test videos are the ground truth")
    parser.add_argument("--out", help="where to write the JSON (default: metrics-<target>.json, see above)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the networks (default 2)")
    args = parser.parse_args(argv)
    if args.reconstruction is None and len(args.videos) != 2:
        parser.error("give two videos (TRUTH GENERATED) or --reconstruction FOLDER --config CONFIG")
    if args.reconstruction is not None and (args.videos or args.config is None):
        parser.error("--reconstruction takes --config and no videos")
    if not 1 <= args.threads <= MAX_THREADS:
        parser.error(f"--threads must be 1 to {MAX_THREADS}")
    return args


def check_out(out, pairs, config=None):
    """Before any work: ``out`` names no video, frame or strip read ({name: (truth, generated)}), nor the config,
    and can be written."""
    for truth, generated in pairs.values():
        for what, path in (("ground-truth video", truth), ("generated video", generated)):
            inside = Path(path).is_dir() and Path(out).resolve().is_relative_to(Path(path).resolve())
            if inside or same_file(out, path):
                raise MetricsError(f"--out {out} is {'in ' if inside else ''}the {what} {path}: write the metrics "
                                   f"to another file, or the {what} would be lost")
    if config is not None and same_file(out, config):
        raise MetricsError(f"--out {out} is the config {config}: write the metrics to another file")
    check_writable(out)


def main(argv=None):
    args = parse_args(argv)
    try:
        check_available()  # before any video is read
        if args.reconstruction is not None:
            if not Path(args.reconstruction).is_dir():
                raise MetricsError(f"{args.reconstruction}: reconstruction folder not found")
            config = load_config(args.config)
            check_out(args.out or Path(args.reconstruction) / f"metrics-{args.target}.json",
                      reconstruction_pairs(args.reconstruction, config), args.config)
            metrics = evaluate_reconstruction(args.reconstruction, config, args.target,
                                              out=args.out, threads=args.threads)
        else:
            pairs, out = pairs_of(*args.videos), args.out or f"metrics-{args.target}.json"
            check_out(out, pairs)
            metrics = evaluate_pairs(pairs, args.target, threads=args.threads)
            write_metrics(out, metrics)
    except (DetectorUnavailable, MetricsError, MediaError, ConfigError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
