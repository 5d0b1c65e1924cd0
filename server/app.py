"""The fedcl ServerApp: aggregates hospital updates and evaluates the global model.

``flwr run .`` loads ``app`` and reads the configuration from ``context.run_config``
(``[tool.flwr.app.config]`` plus ``--run-config`` overrides). ``fedcl run`` builds its
own instance with :func:`make_app`, passing the resolved config and a progress
callback.
"""

from __future__ import annotations

from collections.abc import Sequence

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedcl.config import RunConfig
from fedcl.configure import from_flower_run_config
from fedcl.federation import serve
from fedcl.recorder import RoundCallback


def make_app(
    config: RunConfig | None = None,
    callbacks: Sequence[RoundCallback] = (),
    resume: bool = False,
) -> ServerApp:
    """Build a ServerApp for ``config`` (None: read ``context.run_config``).

    ``resume``: continue the run in ``config.out`` from its checkpoint (without a
    config, the run config's ``resume`` says).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if config is not None:
            serve(grid, config, callbacks, resume)
            return
        # Flower's run config holds every built-in's keys ([tool.flwr.app.config])
        resolved, resumed = from_flower_run_config(context.run_config)
        serve(grid, resolved, callbacks, resumed)

    return app


app = make_app()
