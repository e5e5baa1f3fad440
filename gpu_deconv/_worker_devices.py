"""The dask worker plugin behind :func:`gpu_deconv.dask.assign_devices`.

The plugin travels to the scheduler, which runs its ``setup`` on every worker that joins, also
on a worker its nanny restarts (a new process with the same name): so each worker keeps its
device for the cluster's life, set in the process (not through the environment, which the
worker's threads and a restarted process would not share).
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from .backends._opencl_devices import pick_device, set_process_device


class DevicePlugin(WorkerPlugin):
    """Select an OpenCL device for each worker, by worker name.

    Parameters
    ----------
    selectors : dict
        Worker name to a device selector (:func:`~gpu_deconv.backends._opencl_devices.pick_device`
        syntax); a worker not named keeps its default device.
    """

    name = "gpu_deconv-devices"

    def __init__(self, selectors: dict[Any, str]):
        self.selectors = dict(selectors)

    def setup(self, worker: Any) -> None:
        """Make this worker's selector the process device (raises if it matches nothing)."""
        selector = self.selectors.get(worker.name)
        if selector is not None:
            pick_device(selector)
            set_process_device(selector)

    def teardown(self, worker: Any) -> None:
        """Forget the selection (the plugin is being replaced or the worker closes)."""
        set_process_device(None)
