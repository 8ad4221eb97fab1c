"""Security parts shared by the kiosk and the district (issue 12): signing and secrets (links and events),
staffauth (argon2 staff accounts, lockout, sessions), atrest (AES-GCM templates), guards (input and
operation guards).

Imports nothing from the rest of `edge`: the district server imports these modules alone.
"""
