"""Everything that talks to vLLM: the HTTP client, endpoints, /metrics, managed servers.

Nothing here knows of personas or chats; stages see only :class:`Completer`.
"""
