"""A user's own strategy, loaded by tests through ``--strategy plugin_strategy:HalfStep``."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg


class HalfStep(FedAvg):
    """FedAvg that moves only half way from the global model to the average."""

    def configure_train(self, server_round, arrays, config, grid):
        self._global = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        old, new = self._global.to_torch_state_dict(), arrays.to_torch_state_dict()
        from flwr.app import ArrayRecord

        mixed = {
            k: (old[k] + new[k].to(old[k].dtype)) / 2 if old[k].is_floating_point() else old[k]
            for k in old
        }
        self.round_report = {"half": True}
        return ArrayRecord(mixed), metrics


class NotAStrategy:
    pass
