"""Export the networks animation runs to ONNX graphs (see onnx_backend.py) for ONNX Runtime, C++, mobile or TensorRT.

    python tools/export_onnx.py --config config/vox256.yaml --checkpoint vox256.pth --out onnx/vox256 \\
        [--img_shape 256,256]

Writes region_predictor.onnx, encoder.onnx, generator.onnx, avd_network.onnx (when the checkpoint has one) and
manifest.json (each graph's input and output names) into --out. The frame size defaults to the config's
dataset_params.frame_shape, or 384,384 when it is null (the authors' configs), as in the demo.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the project's modules live one folder up
    sys.path.insert(0, str(ROOT))

from checkpoint import CheckpointError  # noqa: E402
from config import ConfigError  # noqa: E402
from onnx_backend import OnnxBackendError, export_checkpoint  # noqa: E402
from pipeline import choose_img_shape  # noqa: E402


def parse_shape(text):
    """'H,W' -> (H, W), positive even integers; ValueError naming the option otherwise."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 2 or min(shape) < 2 or any(s % 2 for s in shape):
        raise ValueError(f"--img_shape {text!r}: expected the frame height and width as H,W (even, e.g. 256,256)")
    return shape


def frame_shape(args):
    """--img_shape, else the config's dataset_params.frame_shape (384,384 when null), as the demo chooses it."""
    return choose_img_shape(args.config, parse_shape(args.img_shape) if args.img_shape else None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="model config, e.g. config/vox256.yaml")
    parser.add_argument("--checkpoint", required=True, help="checkpoint in the published format")
    parser.add_argument("--out", required=True, help="folder for the graphs (created; other files in it stay)")
    parser.add_argument("--img_shape", help="frame height and width, H,W (default: the config's frame_shape)")
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(args.config, args.checkpoint, args.out, frame_shape(args))
    except (ConfigError, CheckpointError, OnnxBackendError, ValueError, OSError) as error:
        message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"error: {message}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir() if p.suffix in ('.onnx', '.json')))} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
