"""Command line for datasets, meant to sit under `contrastlab data ...`:

    python -m contrastlab.platform.datasets list
    python -m contrastlab.platform.datasets make shapes-captions --seed 1 n_train=5000 image_size=48
    python -m contrastlab.platform.datasets convert cub ~/CUB_200_2011 ~/shards/cub --crop-to-bbox --image-size 128 --resize square
    python -m contrastlab.platform.datasets convert folder ~/photos ~/shards/photos --test-fraction 0.2
    python -m contrastlab.platform.datasets convert reid ~/shards/reid --source market1501:~/Market-1501-v15.09.15:market:seen \
        --source dukemtmc:~/DukeMTMC-reID:duke:seen --source msmt17:~/MSMT17_V1:msmt:unseen --image-size 256 128
    python -m contrastlab.platform.datasets convert hsi ~/Indian_pines_corrected.mat ~/Indian_pines_gt.mat ~/shards/ip \
        --patch-size 15 --train-per-class 10
    python -m contrastlab.platform.datasets convert video ~/UCF101 ~/shards/ucf101 --layout ucf101 --fold 1
    python -m contrastlab.platform.datasets convert voc ~/VOCdevkit/VOC2012 ~/shards/voc --splits train_aug val

`make` prints the dataset folder and its split shard patterns; `key=value` parameters are
parsed with the type of the parameter's default.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import _MODULES, _REGISTRY, convert_cub, convert_image_folder, ensure_dataset, list_datasets


def _parse_params(name: str, pairs: list[str]) -> dict:
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(_MODULES))}")
    defaults, params = _REGISTRY[name].defaults, {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {pair!r}")
        default = defaults.get(key)
        if isinstance(default, bool):
            flag = raw.strip().lower()
            if flag not in _BOOL_TEXT:  # anything else used to mean False silently
                raise ValueError(f"parameter {key}={raw!r}: expected true/false, 1/0 or yes/no")
            params[key] = _BOOL_TEXT[flag]
        elif isinstance(default, (int, float)):
            kind = "an integer" if isinstance(default, int) else "a number"
            try:
                params[key] = type(default)(raw)
            except ValueError:
                raise ValueError(f"parameter {key}={raw!r}: expected {kind} (default {default!r})") from None
        else:
            params[key] = raw  # unknown keys pass through so ensure_dataset names the valid ones
    return params


_BOOL_TEXT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _summary(paths) -> str:
    lines = [str(paths.root)]
    for split, shards in paths.splits.items():
        lines.append(f"  {split}: {paths.meta['counts'][split]} samples in {len(shards)} shard(s)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contrastlab data", description="embedded datasets and converters to shards")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the embedded datasets")
    make = sub.add_parser("make", help="generate an embedded dataset (cached)")
    make.add_argument("name")
    make.add_argument("params", nargs="*", help="key=value generator parameters")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--cache-dir", default=None)
    make.add_argument("--json", action="store_true", help="print meta.json instead of a summary")
    make.add_argument("--ray", action="store_true",
                      help="run the generator's Ray Data stages (e.g. shapes-relations mining) on Ray: RAY_ADDRESS's cluster, "
                           "else a local one (default: in-process)")
    convert = sub.add_parser("convert", help="convert a public dataset layout into shards")
    kinds = convert.add_subparsers(dest="kind", required=True)
    cub = kinds.add_parser("cub", help="CUB-200-2011 folder")
    folder = kinds.add_parser("folder", help="class-per-folder image tree")
    for p in (cub, folder):
        p.add_argument("src")
        p.add_argument("out")
        p.add_argument("--image-size", type=int, default=None)
        p.add_argument("--resize", choices=("shorter", "square"), default="shorter")
        p.add_argument("--maxcount", type=int, default=1000)
        p.add_argument("--overwrite", action="store_true")
    cub.add_argument("--crop-to-bbox", action="store_true")
    cub.add_argument("--bbox-margin", type=float, default=0.0)
    folder.add_argument("--test-fraction", type=float, default=0.0)
    folder.add_argument("--seed", type=int, default=0)
    reid = kinds.add_parser("reid", help="Market-1501 / DukeMTMC-reID / MSMT17 folders -> one multi-domain re-id dataset")
    reid.add_argument("out")
    reid.add_argument("--source", action="append", required=True, metavar="LAYOUT:DIR:DOMAIN:ROLE",
                      help="layout market1501|dukemtmc|msmt17, role seen|unseen|source (repeatable, in domain order)")
    reid.add_argument("--image-size", type=int, nargs=2, default=(256, 128), metavar=("H", "W"))
    reid.add_argument("--seed", type=int, default=0)
    reid.add_argument("--overwrite", action="store_true")
    hsi = kinds.add_parser("hsi", help="Indian Pines / Pavia University / Pavia Centre / Salinas .mat cube + ground truth -> patch shards")
    hsi.add_argument("cube")
    hsi.add_argument("gt")
    hsi.add_argument("out")
    hsi.add_argument("--scene", default=None,
                     help="indian_pines | pavia_university | pavia_centre | salinas (default: guessed from the file name)")
    hsi.add_argument("--cube-key", default=None, help="the cube's variable name in the .mat file (default: the scene's usual one)")
    hsi.add_argument("--gt-key", default=None, help="the ground truth's variable name in the .mat file")
    hsi.add_argument("--patch-size", type=int, default=15)
    hsi.add_argument("--train-per-class", type=float, default=10, help=">= 1: labelled pixels per class; < 1: a fraction")
    hsi.add_argument("--seed", type=int, default=0)
    hsi.add_argument("--overwrite", action="store_true")
    voc = kinds.add_parser("voc", help="PASCAL VOC 2012 (JPEGImages, SegmentationClass[Aug], ImageSets/Segmentation) -> shards")
    voc.add_argument("src")
    voc.add_argument("out")
    voc.add_argument("--splits", nargs="*", default=None, help="e.g. train_aug val (default: every split list found)")
    voc.add_argument("--max-side", type=int, default=None, help="resize so the longer side is at most this")
    voc.add_argument("--overwrite", action="store_true")
    video = kinds.add_parser("video", help="class-per-folder videos (UCF101 / HMDB51 / Kinetics style, optional split files) -> MP4 shards")
    video.add_argument("src")
    video.add_argument("out")
    video.add_argument("--layout", default="auto", choices=("auto", "ucf101", "hmdb51", "folders"))
    video.add_argument("--fold", type=int, default=1)
    video.add_argument("--short-side", type=int, default=128)
    video.add_argument("--max-frames", type=int, default=0)
    video.add_argument("--test-fraction", type=float, default=0.0)
    video.add_argument("--on-error", default="raise", choices=("raise", "skip"))
    video.add_argument("--seed", type=int, default=0, help="seeds the test-fraction split and the order samples are written in")
    video.add_argument("--overwrite", action="store_true")
    return parser


def _reid_sources(specs: list[str]) -> list[tuple[str, str, str, str]]:
    out = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) != 4:
            raise ValueError(f"--source expects LAYOUT:DIR:DOMAIN:ROLE, got {spec!r}")
        layout, src, domain, role = parts
        out.append((layout, os.path.expanduser(src), domain, role))
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            for name, description in list_datasets().items():
                print(f"{name:18s} {description}")
        elif args.command == "make":
            if args.ray:
                from contrastlab.platform.runner import init_ray

                init_ray()
            paths = ensure_dataset(args.name, seed=args.seed, cache_dir=args.cache_dir, **_parse_params(args.name, args.params))
            print(json.dumps(paths.meta, indent=1) if args.json else _summary(paths))
        elif args.kind == "reid":
            from .reid_converters import convert_reid

            paths = convert_reid(_reid_sources(args.source), args.out, image_size=tuple(args.image_size), seed=args.seed,
                                 overwrite=args.overwrite)
            print(_summary(paths))
        elif args.kind == "video":
            from .video_folder import convert_video_folder

            paths = convert_video_folder(args.src, args.out, layout=args.layout, fold=args.fold, short_side=args.short_side,
                                         max_frames=args.max_frames, test_fraction=args.test_fraction, seed=args.seed,
                                         on_error=args.on_error, overwrite=args.overwrite)
            print(_summary(paths))
        elif args.kind == "voc":
            from .voc import convert_voc

            paths = convert_voc(args.src, args.out, splits=args.splits, max_side=args.max_side, overwrite=args.overwrite)
            print(_summary(paths))
        elif args.kind == "hsi":
            from .hsi import convert_hsi

            per_class = float(args.train_per_class)
            if per_class >= 1:  # a count: 10.5 must not be truncated to 10 silently
                if not per_class.is_integer():
                    raise ValueError(f"--train-per-class {per_class:g}: a count (>= 1) must be a whole number; "
                                     f"a fraction of each class must be < 1")
                per_class = int(per_class)
            try:
                paths = convert_hsi(args.cube, args.gt, args.out, scene=args.scene, cube_key=args.cube_key, gt_key=args.gt_key,
                                    overwrite=args.overwrite, patch_size=args.patch_size, train_per_class=per_class, seed=args.seed)
            except KeyError as exc:  # a .mat variable that cannot be identified: the message names the file and --cube/gt-key
                raise ValueError(exc.args[0] if exc.args else str(exc)) from None
            except NotImplementedError as exc:  # a MATLAB v7.3 .mat file: the message names it and how to re-save it
                raise ValueError(str(exc)) from None
            print(_summary(paths))
        elif args.kind == "cub":
            paths = convert_cub(args.src, args.out, crop_to_bbox=args.crop_to_bbox, bbox_margin=args.bbox_margin,
                                image_size=args.image_size, resize=args.resize, maxcount=args.maxcount, overwrite=args.overwrite)
            print(_summary(paths))
        else:
            paths = convert_image_folder(args.src, args.out, test_fraction=args.test_fraction, seed=args.seed,
                                         image_size=args.image_size, resize=args.resize, maxcount=args.maxcount,
                                         overwrite=args.overwrite)
            print(_summary(paths))
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
