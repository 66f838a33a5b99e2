"""Version facts, at the bottom of the package (imports nothing)."""

__version__ = "0.1.0"
# The name on the package index (`pip install arrowquantize`); the import name and the command
# are `arrowquant` (the name `arrowquant` on the index belongs to an unrelated project).
DISTRIBUTION = "arrowquantize"
# The pyarrow major release whose libarrow.so.NN00 the compiled core links: every 26.x release
# shares that ABI, so the dependency is pyarrow>=26,<27 and each arrowquantize release is built
# for one pyarrow major (docs/install.md).
PYARROW_MAJOR = 26
