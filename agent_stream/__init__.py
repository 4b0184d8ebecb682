"""Agent Stream: a self-hosted voice-agent gateway for telephony media streams."""
