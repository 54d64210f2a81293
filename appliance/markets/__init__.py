"""Exchange connections through ccxt from plain settings: what the ccxt feed and the ccxt
venue share (construction with urls and options, markets files, credentials, instrument
checks). Knows nothing else of the appliance.
"""

from appliance.markets.connect import (
    ExchangeSettings,
    MarketsError,
    deep_merge,
    instrument_problems,
    load_markets_file,
    make_exchange,
    save_markets,
)
from appliance.markets.credentials import Credentials, CredentialsError, load_credentials

__all__ = [
    "Credentials",
    "CredentialsError",
    "ExchangeSettings",
    "MarketsError",
    "deep_merge",
    "instrument_problems",
    "load_credentials",
    "load_markets_file",
    "make_exchange",
    "save_markets",
]
