"""Feature-guided score diffusion.

Importing the package sets Intel MKL's documented conditions for bitwise run-to-run results
(torch's CPU BLAS is MKL): no dynamic change of the thread count (MKL_DYNAMIC, OMP_DYNAMIC) and
strict conditional numerical reproducibility (MKL_CBWR=AUTO,STRICT: the fastest code path, its
GEMMs independent of thread count and memory alignment; no speed cost measured, README "Same seed").
They take effect only before torch is imported, so `python -m fgsd` gets them; a value already in
the environment is kept.
"""
import os as _os

for _key, _value in (("MKL_DYNAMIC", "FALSE"), ("OMP_DYNAMIC", "FALSE"), ("MKL_CBWR", "AUTO,STRICT")):
    _os.environ.setdefault(_key, _value)
