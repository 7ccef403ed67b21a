"""``python -m led.train``: see :mod:`led.train` for the options."""

from led.train.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
