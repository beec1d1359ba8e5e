"""Named configs of `phasejax train --config NAME`: one module NAME.py per config, each with
`get_config() -> Config` (see phasejax.config.load_config).

They live inside the package so that a wheel install finds them as a checkout does; a
config of your own can stay anywhere and be passed as a path (`--config path/to/my.py`).
"""
