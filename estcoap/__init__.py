"""estcoap: EST over CoAP/DTLS (RFC 9148) and EST over HTTPS (RFC 7030)."""

__version__ = "0.1.0"
