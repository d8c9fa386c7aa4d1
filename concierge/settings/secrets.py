"""The configured secrets, so that logging can mask them wherever they turn up."""

from __future__ import annotations

from concierge.settings.models import Settings


def secrets_of(settings: Settings) -> list[str]:
    found = [value for _, value, secret in settings.effective if secret and value]
    found += [
        key.secret for provider in settings.pool.providers for key in provider.keys if key.secret
    ]
    found += [key.secret.decode() for key in settings.api.keys]
    return found
