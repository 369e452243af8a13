"""Channels: the provider contract and built-in generic channels."""

from rulekit.channels.base import ChannelContext, ChannelSettings, Provider, Reply

__all__ = ["ChannelContext", "ChannelSettings", "Provider", "Reply"]
