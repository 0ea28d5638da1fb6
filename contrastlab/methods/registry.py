"""Method name -> class. Imports lazily so `contrastlab --help` stays fast."""
from __future__ import annotations

import importlib

METHODS = {
    "clip": "contrastlab.methods.clip.method:CLIP",
    "declip": "contrastlab.methods.declip.method:DeCLIP",
    "ifnd": "contrastlab.methods.ifnd.method:IFND",
    "c3gan": "contrastlab.methods.c3gan.method:C3GAN",
    "unimo": "contrastlab.methods.unimo.method:UNIMO",
    "scale": "contrastlab.methods.scale.method:SCALE",
    "fame": "contrastlab.methods.fame.method:FAME",
    "ucr": "contrastlab.methods.ucr.method:UCR",
    "ppc": "contrastlab.methods.ppc.method:PPC",
    "cvp": "contrastlab.methods.cvp.method:CVP",
}


def register(name: str, target: str) -> None:
    METHODS[name] = target


def get_method(name: str):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: available methods are {', '.join(sorted(METHODS))}")
    module, attr = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def available() -> list[str]:
    return sorted(METHODS)
