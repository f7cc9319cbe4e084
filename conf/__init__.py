# Hydra's config tree; installed as the package quantsweep.conf (see pyproject.toml).
