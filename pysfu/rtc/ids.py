"""Server-assigned ids with LiveKit's prefixes (clients check the prefixes, e.g. ``TR_``)."""

import secrets

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"


def _suffix(length: int = 12) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def room_sid() -> str:
    return "RM_" + _suffix()


def participant_sid() -> str:
    return "PA_" + _suffix()


def track_sid() -> str:
    return "TR_" + _suffix()


def event_id() -> str:
    return "EV_" + _suffix()
