"""Coverage-guided fuzzing of the .aq reader and decoder (atheris). Run: make fuzz TARGET=aq.

Seeds itself with a valid .aq file; every mutated file must decode correctly or be refused
with an ArrowQuantError (or KeyError for a layer that is not there)."""

import os
import sys
import tempfile

import atheris
import numpy as np

with atheris.instrument_imports():
    import arrowquant as aq

WORKDIR = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
PATH = os.path.join(WORKDIR, "m.aq")


def seed_corpus(directory: str) -> None:
    from safetensors.numpy import save_file
    os.makedirs(directory, exist_ok=True)
    src = os.path.join(WORKDIR, "seed.safetensors")
    save_file({"w": np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32),
               "b": np.arange(8, dtype=np.int64)}, src)
    aq.ArrowQuantV2().quantize_from_safetensors(src, os.path.join(directory, "seed.aq"))


def test_one_input(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        with aq.open(PATH) as f:
            for name in f.layer_names:
                f.dequantize(name)
    except (aq.ArrowQuantError, KeyError):
        pass


if __name__ == "__main__":
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpus and (not os.path.isdir(corpus[0]) or not os.listdir(corpus[0])):
        seed_corpus(corpus[0])  # start from a valid file
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
