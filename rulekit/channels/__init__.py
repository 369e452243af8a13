"""Channels: the provider contract and built-in generic channels."""

from rulekit.channels.base import ChannelContext, ChannelSettings, ChannelTimer, Provider, Reply

__all__ = ["ChannelContext", "ChannelSettings", "ChannelTimer", "Provider", "Reply"]
