"""``e2e-voice models``: install, list, verify and locate the offline model bundle."""

from __future__ import annotations

import argparse
import sys

from e2e_voice.assets.bundle import BundleError, install
from e2e_voice.assets.registry import (
    CorruptModelError,
    ModelNotAvailableError,
    cache_dir,
    check_model_dir,
    model_dir,
    resolve,
)
from e2e_voice.assets.specs import MODELS


def _status(name: str) -> str:
    spec = MODELS[name]
    if not spec.files:
        return "path/hub only"
    directory = model_dir(name)
    if not directory.is_dir():
        return "missing"
    try:
        check_model_dir(spec, directory)
    except CorruptModelError:
        return "CORRUPT"
    return "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2e-voice models", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    p_install = sub.add_parser("install", help="install (or repair) models; default: the whole bundle")
    p_install.add_argument("names", nargs="*")
    p_install.add_argument("--force", action="store_true", help="re-hash every file, rebuild what differs")
    sub.add_parser("list", help="list known models and their state")
    p_verify = sub.add_parser("verify", help="re-hash every installed file")
    p_verify.add_argument("names", nargs="*")
    p_path = sub.add_parser("path", help="print the resolved path of a model")
    p_path.add_argument("name")
    args = parser.parse_args(argv)

    if args.action == "install":
        print(f"installing the offline model bundle into {cache_dir() / 'models'}")
        try:
            install(args.names or None, force=args.force)
        except (BundleError, ModelNotAvailableError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.action == "list":
        print(f"cache: {cache_dir() / 'models'}")
        for name, spec in MODELS.items():
            print(f"  {name:<24} {spec.size / 1e6:8.1f} MB  {_status(name):<14} {spec.description}")
        return 0
    if args.action == "verify":
        bad = 0
        for name in args.names or [n for n, s in MODELS.items() if s.in_bundle]:
            try:
                check_model_dir(MODELS[name], model_dir(name), full=True)
                print(f"  ok       {name}")
            except CorruptModelError as exc:
                bad += 1
                print(f"  CORRUPT  {name}: {exc}")
        return 1 if bad else 0
    try:
        print(resolve(args.name))
    except (ModelNotAvailableError, CorruptModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
