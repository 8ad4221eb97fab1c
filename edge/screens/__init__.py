"""The two local web pages: the senior-facing kiosk display and the staff screen, on a shared loopback server
(`localweb`)."""
