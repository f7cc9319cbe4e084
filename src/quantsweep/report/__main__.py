"""``python -m quantsweep.report SWEEP_DIR``: the same as the ``quantsweep-report`` command."""

from quantsweep.report.build import main

main()
