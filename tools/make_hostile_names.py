#!/usr/bin/env python3
"""Writes small weight files whose names try to take over the terminal or the log they are shown in.

Every name the tool echoes (tensor names, keys, JSON strings) comes from the file, so each of these
carries control characters where a name goes; the tool must show them escaped (`\\x1b`, `\\n`, `\\0`,
`\\u{202e}`) and never write the raw bytes:
  fixtures/hostile-names/escape-keys.safetensors   tensors named with an ANSI clear-screen plus a forged
                                                   "OK:" line, a newline, a NUL, a carriage return, a
                                                   bidi override, a C1 control (U+009B, the one-byte CSI)
                                                   and DEL; no naming scheme maps them, so the refusal
                                                   quotes them
  fixtures/hostile-names/escape-dtype.safetensors  a dtype string (a JSON string the refusal quotes)
                                                   holding a clear-screen sequence and a newline
  fixtures/hostile-names/escape-global.pth         a PyTorch zip whose pickle names a class (refused: not
                                                   on the allow-list) with the same sequences, a NUL and
                                                   a bidi override in its module and class names
Overlong names (a 1 MB key) and hostile spec families are made by the Swift tests themselves, so
that no large file is stored.

Needs only the Python standard library:  python3 tools/make_hostile_names.py
"""
import json
import os
import struct
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "hostile-names")

HOSTILE = [
    "\x1b[2J\x1b[HOK: forged.weight",
    "layer1\nOK: forged line.weight",
    "nul\x00inside.weight",
    "carriage\rreturn.weight",
    "bidi\u202eexe.txt.weight",
    "c1\u009b31mred.weight",
    "del\x7fchar.weight",
]


def safetensors(path, names):
    header = {}
    offset = 0
    for name in names:
        header[name] = {"dtype": "F32", "shape": [1], "data_offsets": [offset, offset + 4]}
        offset += 4
    raw = json.dumps(header, ensure_ascii=True).encode()   # \u001b, \u0000, … as JSON escapes
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def bad_dtype(path):
    header = {"conv1.weight": {"dtype": "F\x1b[2J\nOK: 32", "shape": [1], "data_offsets": [0, 4]}}
    raw = json.dumps(header, ensure_ascii=True).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)


def evil_global(path):
    def short_unicode(text):
        b = text.encode("utf-8")
        return b"\x8c" + bytes([len(b)]) + b   # SHORT_BINUNICODE
    # PROTO 2, module, name, STACK_GLOBAL, EMPTY_TUPLE, REDUCE, STOP: the reader refuses the global
    # before anything else, quoting it.
    pickle = (b"\x80\x02" + short_unicode("evil\x1b[2J\x1b[HOK: forged\nmodule")
              + short_unicode("cls\x00\u202ename") + b"\x93)R.")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in [("archive/data.pkl", pickle), ("archive/byteorder", b"little"), ("archive/version", b"3\n")]:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))   # fixed: the file is reproducible
            z.writestr(info, data)


def main():
    os.makedirs(OUT, exist_ok=True)
    safetensors(os.path.join(OUT, "escape-keys.safetensors"), HOSTILE)
    bad_dtype(os.path.join(OUT, "escape-dtype.safetensors"))
    evil_global(os.path.join(OUT, "escape-global.pth"))


if __name__ == "__main__":
    main()
