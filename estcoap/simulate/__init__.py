"""`estcoap simulate`: a fleet of virtual devices against a real EST server.

* relay: per-device UDP links with loss/duplication/reordering/delay, TCP counting links
* fleet: device generation and the bounded-concurrency runner
* report: JSON report, summary, optional plot
* progress: the live progress bar
"""

from .fleet import DeviceOutcome, Fleet, FleetResult, FleetSettings, failure_reason
from .relay import Counters, Impairment, TcpRelay, Traffic, UdpRelay

__all__ = [
    "Counters",
    "DeviceOutcome",
    "Fleet",
    "FleetResult",
    "FleetSettings",
    "Impairment",
    "TcpRelay",
    "Traffic",
    "UdpRelay",
    "failure_reason",
]
