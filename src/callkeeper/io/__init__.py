"""asyncio lives here and only here: sockets, the clock, and the driver feeding the pure core."""
