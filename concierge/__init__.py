"""concierge: a supervised trio daemon answering a community on Telegram and WhatsApp."""

__version__ = "0.1.0"
