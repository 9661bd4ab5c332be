"""The parts of the build pyproject.toml cannot say: the cffi modules (see ffibuild.py).

The C helper is optional: when it does not compile, the install goes on without it and the
VMM runs its hot loops in Python."""
from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self):
        for extension in self.extensions:
            extension.optional = True
        super().run()


setup(cffi_modules=["ffibuild.py:layouts", "ffibuild.py:libc", "ffibuild.py:fastpath"],
      cmdclass={"build_ext": OptionalBuildExt})
