"""A job as named stages, one module each, run in this order by :func:`quantsweep.job.execute`:

``load`` → ``export`` → ``plan`` → ``calibrate`` → ``search`` → ``quantize`` → ``evaluate``
→ ``time`` → ``assemble``.

Each stage module names itself once (``NAME``: its entry in results.json's
``phase_seconds``); a stage whose output is cached also names its cache kind
(``CACHE_KIND``, its entry in results.json's ``cache``) and the quantsweep modules that
compute it (``CODE``: their source is part of the key, since the package version stays the
same while the code changes). Its cache-key parts come from a plain function of config and
upstream keys (``key_parts``), which tests call without any model. Its ``run`` takes the
:class:`~quantsweep.stages.context.JobRun` and the outputs of earlier stages, and returns a
frozen output of its own.

To add a stage: a module here with ``NAME``, its output type and ``run``; a line in
``job.execute``; its key parts tested in ``tests/test_stages.py`` if it is cached.
"""
