"""Crop a photo or a video the way the training data were cropped, before animating it.

    python tools/crop.py me.png --target face --size 256 --out me256.png --report me.json --preview me.box.png
    python tools/crop.py talk.mp4 --like me.json --size 256 --out talk256.mp4 --preview talk.box.png
    python tools/crop.py photo.jpg --box 120,40,380,300 --size 256 --out photo256.png

Faces get a square around the face, enlarged by a margin; people a square around the whole figure. A video gets
one fixed box per camera shot, holding the object in every frame of it (never a box that moves from frame to
frame). ``--like`` crops a driving video so that its object takes the same size and place as in the cropped
source, the match that relative mode needs. The report holds the boxes in source pixels (left, top, right,
bottom; right and bottom exclusive) with their frame ranges. No output may name an input or another output.
"""
import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: the project's modules live one folder up
    sys.path.insert(0, str(REPO_ROOT))

from cropping import SIZES, TARGETS, CropError, check_files, crop_file, parse_box, read_report  # noqa: E402
from media import MAX_PIXELS, MediaError  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Crop a photo or a video around its face or person.")
    parser.add_argument("input", help="an image or a video")
    parser.add_argument("--out", required=True, help="the cropped image or video")
    parser.add_argument("--target", default="auto", choices=TARGETS,
                        help="face (talking-head models), person (body models) or auto (a large face: face)")
    parser.add_argument("--size", type=int, default=256,
                        help=f"side of the square result in pixels, {SIZES[0]} to {SIZES[1]} (default 256)")
    parser.add_argument("--box", help="LEFT,TOP,RIGHT,BOTTOM in pixels: crop there instead of detecting")
    parser.add_argument("--like", metavar="SOURCE_CROP_REPORT",
                        help="a source's --report: give the object the source's size and place in the crop")
    parser.add_argument("--report", help="write the chosen boxes here (JSON)")
    parser.add_argument("--preview",
                        help="write the first frame of each scene with its crop box drawn in green here (an image)")
    parser.add_argument("--max_pixels", type=int, default=MAX_PIXELS,
                        help=f"refuse images and video frames of more pixels, from their header (default "
                             f"{MAX_PIXELS:_}: a 48 MP photo or an 8K frame passes, a decompression bomb does not)")
    args = parser.parse_args(argv)
    if args.box and args.like:
        parser.error("--box and --like are alternatives: give one")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        check_files(args.input, {"--out": args.out, "--report": args.report, "--preview": args.preview},
                    {"--like": args.like})  # the library checks the rest; only here is the --like file known
        box = parse_box(args.box) if args.box else None
        like = read_report(args.like) if args.like else None
        report = crop_file(args.input, args.out, target=args.target, size=args.size, box=box, like=like,
                           preview=args.preview, report=args.report, max_pixels=args.max_pixels)
    except (CropError, MediaError, ValueError, OSError) as error:  # a full disk, an unwritable folder, ...
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    for scene in report["scenes"]:
        frames = "" if "frames" not in report else f" frames {scene['frames'][0]}-{scene['frames'][1]}"
        print(f"{report['target']} box {','.join(map(str, scene['box']))}{frames}", file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
