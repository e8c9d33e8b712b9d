"""The JT/T 808 terminal gateway (docs/jt808.md): frames (`frames.py`), message bodies
(`messages.py`), sub-package reassembly (`reassembly.py`), the city's sensor mapping
(`mapping.py`), the registry and quarantine access (`directory.py`), the MQTT uplink
(`uplink.py`), the TCP server (`server.py`) and `muck gateway jt808` (`cli.py`)."""
