"""A loopback exchange serving real captured Binance data (``dynamind exchange-sim``).

It speaks the part of Binance's spot API that ccxt and ccxt.pro use (REST, market streams,
user-data streams, signed orders with a matching engine against the replayed books), on
127.0.0.1 only, so a live config can be tried offline. It knows nothing of the appliance.
"""

from appliance.exsim.capture import Capture, CaptureError, load_capture
from appliance.exsim.server import DEFAULT_PORT, HOST, ExchangeSim, bound_port, client_urls, serve

__all__ = [
    "DEFAULT_PORT",
    "HOST",
    "Capture",
    "CaptureError",
    "ExchangeSim",
    "bound_port",
    "client_urls",
    "load_capture",
    "serve",
]
