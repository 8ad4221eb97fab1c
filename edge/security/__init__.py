"""Security parts shared by the kiosk and the district (issue 12).

Imports nothing from the rest of `edge`: the district server imports these modules alone.
"""
