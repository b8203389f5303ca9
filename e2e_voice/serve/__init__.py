"""Full-duplex serving: moshi's websocket protocol at ``/api/chat``, a browser page, health and metrics."""
