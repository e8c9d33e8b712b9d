"""The gateway retains each terminal's status (docs/mqtt-contract.md): cleared after each
test module, so later tests' collectors on the session's broker do not receive it."""

from __future__ import annotations

import pytest

from tests.mqtt_helpers import clear_retained


@pytest.fixture(scope="module")
def no_retained_status_left(broker):
    yield
    clear_retained(broker.url)
