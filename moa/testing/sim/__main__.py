"""``python -m moa.testing.sim``: see `moa.testing.sim.cli`."""

from moa.testing.sim.cli import main

if __name__ == "__main__":  # importing this module (a doc tool, a walk of modules) must not serve
    main()
