"""Masking secrets in what the fleet prints or writes (config show, reports, error lines): one
implementation, so no report masks less than another."""

from __future__ import annotations

import re

MASK = "***"
SECRET_NAME = re.compile(r"token|password|secret", re.IGNORECASE)
# scheme://user:password@host: the password runs to the last "@" before the host, so one with an
# unescaped "@" is still masked whole; "," ends it too (nats.url may list several servers).
URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s,]*):[^/\s,]*@")
# NATS reads a lone user part as a token: nats://s3cr3t@host.
NATS_TOKEN = re.compile(r"(?P<head>\b(?:nats|tls|ws|wss)://)[^:/@\s,]+@")
# libpq also takes the password as a parameter: postgresql://h/db?password=pw, "host=h password=pw".
PASSWORD_PARAM = re.compile(r"(?P<head>\bpassword=)[^&\s]+", re.IGNORECASE)


def mask_url(text: str) -> str:
    """``text`` with the password (or NATS token) of every URL in it masked:
    postgresql://u:pw@h/db -> postgresql://u:***@h/db."""
    text = URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
    text = NATS_TOKEN.sub(rf"\g<head>{MASK}@", text)
    return PASSWORD_PARAM.sub(rf"\g<head>{MASK}", text)
