"""Build of the optional compiled parser loop; everything else is in pyproject.toml.

`flakeguard.core._junit_speedups` (Cython, against lxml's public C API) is built when a C
compiler is present. The extension is optional: without a compiler the install still
succeeds and `flakeguard.core.junit` runs its pure-Python loop (same results, slower).
"""

from __future__ import annotations

import lxml
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(
                "flakeguard.core._junit_speedups",
                ["src/flakeguard/core/_junit_speedups.pyx"],
                include_dirs=lxml.get_include(),
                optional=True,
            )
        ],
        compiler_directives={"language_level": "3"},
    )
)
