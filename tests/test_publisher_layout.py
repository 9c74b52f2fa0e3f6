"""The publisher's modules each do one job and call one way: nothing below the
task-author API imports the package's re-exports or the modules above it."""

from __future__ import annotations

import grimp
import pytest

# Each module, and the publisher modules it must never import (directly or not).
NEVER_IMPORTS = {
    "progress.publisher.recording": {"progress.publisher.publish", "progress.publisher.track",
                                     "progress.publisher.heartbeat"},
    "progress.publisher.heartbeat": {"progress.publisher.publish", "progress.publisher.track"},
    "progress.publisher.publish": {"progress.publisher.track"},
    "progress.publisher.context": {"progress.publisher.publish", "progress.publisher.track",
                                   "progress.publisher.recording"},
    "progress.store.outbox": {"progress.publisher"},
}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("progress", cache_dir=None)


@pytest.mark.parametrize("module", sorted(NEVER_IMPORTS))
def test_calls_go_one_way(graph: grimp.ImportGraph, module: str) -> None:
    """The outbox, the heartbeat, the recording and the pipeline never reach back up."""
    for above in NEVER_IMPORTS[module]:
        assert not graph.chain_exists(importer=module, imported=above, as_packages=False), (
            f"{module} imports {above}")


def test_no_publisher_module_imports_the_package(graph: grimp.ImportGraph) -> None:
    """Only users import `progress.publisher` (the re-exports); its own modules import
    each other by name."""
    modules = graph.find_children("progress.publisher")
    importing = {m for m in modules
                 if graph.direct_import_exists(importer=m, imported="progress.publisher")}
    assert importing == set()
