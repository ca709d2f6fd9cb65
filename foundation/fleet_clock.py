"""The fleet's clock (``WATTSUP_FLEET_*``): one time zone and one public-holiday country, shared by
the detector's slots and day types and by the forecaster's seasonality, so both agree on when a
day starts and which days are not working days.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def check_timezone(value: str) -> str:
    """``value`` if it names an IANA time zone; a clear error otherwise."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Africa/Nairobi or UTC") from None
    return value


def check_country(value: str | None) -> str | None:
    """``value`` (upper-cased) if the ``holidays`` package knows its public holidays; None for none."""
    if value is None or not value.strip():
        return None
    import holidays

    code = value.strip().upper()
    if code not in holidays.list_supported_countries():
        raise ValueError(f"no public holidays known for country {value!r}: use an ISO 3166 code such as KE or NL")
    return code


class FleetClock(BaseSettings):
    """Time zone (IANA) and country (ISO 3166, for public holidays) of the fleet's meters."""

    model_config = SettingsConfigDict(env_prefix="WATTSUP_FLEET_", env_file=".env", extra="ignore")

    timezone: str = "UTC"
    """Slots, day types and daily seasonality follow this zone's local time, daylight saving included."""
    country: str | None = None
    """Public holidays of this country are non-working days; unset: only weekends are."""

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        return check_country(value)
