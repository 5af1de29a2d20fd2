"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``), as the cluster
tests and ``benchmarks/bench_cluster.py`` start it: a head with no CPUs for replicas (it holds
Serve's controller, its HTTP proxy and the ingress, by the custom resource ``ingress``) and
worker nodes of one CPU each, one engine replica apiece."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def local_cluster(worker_nodes: int) -> Iterator[tuple[Any, list[Any]]]:
    """The cluster, connected (``ray.init``), and its worker nodes; Serve, the driver and every
    node are shut down on the way out, each even if the one before failed."""
    import ray  # noqa: PLC0415 - the cluster extra
    from ray import serve  # noqa: PLC0415
    from ray.cluster_utils import Cluster  # noqa: PLC0415

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={
        "num_cpus": 0, "resources": {"ingress": 1}, "include_dashboard": False})
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(worker_nodes)]
        cluster.wait_for_nodes()
        yield cluster, workers
    finally:
        try:
            serve.shutdown()
        finally:
            try:
                ray.shutdown()
            finally:
                cluster.shutdown()
