"""What a fake Slack bot token may do: its scopes and the channels it is in (pure values).

`FakeSlack` (watcher.testing.sinks) keeps one `SlackAccess`, replaced whole
when a test changes it, and asks it whether a post is allowed, what
`conversations.info` answers and which scopes `x-oauth-scopes` lists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

# The scopes of the app in docs/slack-app-manifest.yaml: what a fake token has by default.
APP_SCOPES = (
    "chat:write",
    "chat:write.public",
    "channels:history",
    "groups:history",
    "channels:read",
    "groups:read",
)


@dataclass(frozen=True, slots=True)
class SlackAccess:
    """A token's scopes, the private channels, and the channels the bot is not a member of."""

    scopes: frozenset[str] = frozenset(APP_SCOPES)
    private: frozenset[str] = frozenset()
    outside: frozenset[str] = frozenset()

    def with_channel(self, channel: str, *, member: bool, private: bool) -> SlackAccess:
        """This access with `channel`'s membership and privacy set."""
        outside = self.outside - {channel} if member else self.outside | {channel}
        privates = self.private | {channel} if private else self.private - {channel}
        return replace(self, outside=outside, private=privates)

    def scope_header(self) -> dict[str, str]:
        """The `x-oauth-scopes` header Slack sends with a Web API answer."""
        return {"x-oauth-scopes": ",".join(sorted(self.scopes))}

    def post_refusal(self, channel: str) -> str | None:
        """The error a post to an existing `channel` gets, or None when it is allowed.

        Every post needs chat:write; a channel the bot is not in takes
        chat:write.public, and a private one cannot be posted to from outside.
        """
        if "chat:write" not in self.scopes:
            return "missing_scope"
        if channel in self.outside:
            if channel in self.private:
                return "channel_not_found"
            if "chat:write.public" not in self.scopes:
                return "not_in_channel"
        return None

    def channel_info(self, channel: str, *, known: bool, archived: bool) -> dict[str, Any] | str:
        """`conversations.info`'s channel object, or its error name.

        It needs channels:read (groups:read for a private channel); a private
        channel the bot is not in does not exist for it.
        """
        private, member = channel in self.private, channel not in self.outside
        if ("groups:read" if private else "channels:read") not in self.scopes:
            return "missing_scope"
        if not known or (private and not member):
            return "channel_not_found"
        return {
            "id": channel,
            "name": f"channel-{channel.lower()}",
            "is_channel": not private,
            "is_private": private,
            "is_archived": archived,
            "is_member": member,
        }
