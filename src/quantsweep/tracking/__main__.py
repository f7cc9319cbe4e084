"""``python -m quantsweep.tracking DIR``: the same as ``quantsweep-log DIR``."""

from quantsweep.tracking.cli import main

if __name__ == "__main__":
    main()
