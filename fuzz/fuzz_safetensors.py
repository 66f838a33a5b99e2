"""Coverage-guided fuzzing of the safetensors reader (atheris). Run: make fuzz TARGET=safetensors.

Each input is a whole file: it must be quantized correctly or refused with an ArrowQuantError."""

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import arrowquant as aq

WORKDIR = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
SOURCE, OUTPUT = os.path.join(WORKDIR, "m.safetensors"), os.path.join(WORKDIR, "m.aq")


def test_one_input(data: bytes) -> None:
    with open(SOURCE, "wb") as f:
        f.write(data)
    try:
        aq.ArrowQuantV2(num_threads=1).quantize_from_safetensors(SOURCE, OUTPUT, method="rtn")
    except aq.ArrowQuantError:
        assert not os.path.exists(OUTPUT + ".partial")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
