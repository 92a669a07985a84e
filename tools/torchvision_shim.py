"""Imports torchvision for the fixture scripts, also where its C extension cannot load.

The fixture scripts use only the pure-Python model definitions (torchvision.models.resnet). On some
CPU-only torch/torchvision pairings torchvision's compiled ops (_C.so) do not load, and importing
torchvision then fails inside its meta registrations; those are stubbed in that case, which is
recorded in the returned note so the manifests can say so.
"""
import ctypes
import importlib.util
import os
import sys
import types


def import_torchvision():
    """Returns (torchvision, torchvision.models.resnet, note or None)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        sys.exit("torchvision is not installed; see tools/requirements-torch-fixtures.txt")
    note = None
    try:
        ctypes.CDLL(os.path.join(os.path.dirname(spec.origin), "_C.so"))
    except OSError as err:
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        note = ("torchvision C extension not loadable (%s); meta registrations stubbed, "
                "only the pure-Python torchvision.models.resnet is used" % str(err).split(":")[0])
    import torchvision
    from torchvision.models import resnet
    return torchvision, resnet, note
