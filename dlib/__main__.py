"""``python -m dlib``: the command line, :mod:`dlib.tools.cli`."""

from dlib.tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
