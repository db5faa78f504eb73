"""Builds ringattn._core with the repository's CMake and puts it, with libringattn, into the
package (the core finds the library next to it: RPATH $ORIGIN). pip builds in place (pip >= 21.3),
so the repository root is this file's parent.

    pip install --no-build-isolation ./python          # Debian: pybind11-dev, python3-dev
    CMAKE_ARGS="-DRINGATTN_ENABLE_CUDA=OFF" pip install ./python

CMAKE_ARGS adds options to the configure step (CUDA, MPI, NCCL: as for the library)."""
import glob
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent.parent


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        if not (ROOT / "include" / "ringattn" / "ringattn.h").exists():
            raise RuntimeError("ringattn's Python package is built from the repository: run "
                               "`pip install ./python` from a checkout's root")
        build = Path(self.build_temp).resolve() / "cmake"
        stage = Path(self.build_temp).resolve() / "stage"
        args = ["-DCMAKE_BUILD_TYPE=Release", "-DRINGATTN_BUILD_TESTS=OFF",
                "-DRINGATTN_BUILD_EXAMPLES=OFF", "-DRINGATTN_BUILD_PYTHON=ON",
                f"-DPython3_EXECUTABLE={sys.executable}",
                # the library next to the core in the package: RPATH $ORIGIN
                "-DCMAKE_INSTALL_LIBDIR=ringattn", "-DRINGATTN_PYTHON_INSTALL_DIR=."]
        args += shlex.split(os.environ.get("CMAKE_ARGS", ""))
        try:
            import pybind11
            args.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
        except ImportError:
            pass  # Debian's pybind11-dev: found by CMake itself
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.check_call(["cmake", "-S", str(ROOT), "-B", str(build)] + args)
        subprocess.check_call(["cmake", "--build", str(build), "-j", jobs])
        subprocess.check_call(["cmake", "--install", str(build), "--prefix", str(stage)])
        out = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        out.mkdir(parents=True, exist_ok=True)
        for f in glob.glob(str(stage / "ringattn" / "_core*.so")):
            shutil.copy2(f, out / Path(f).name)
        # the library under its soname (libringattn.so.<major>), the name the core asks for
        sonames = sorted(glob.glob(str(stage / "ringattn" / "libringattn.so.[0-9]*")), key=len)
        if not sonames:
            raise RuntimeError(f"libringattn was not installed into {stage / 'ringattn'}")
        shutil.copy2(sonames[0], out / Path(sonames[0]).name)  # follows the symlink

setup(ext_modules=[Extension("ringattn._core", sources=[])], cmdclass={"build_ext": CMakeBuild})
