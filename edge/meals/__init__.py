"""The meal rules (pure), what the kiosk says about a decision, and staff confirmation of a pending check-in."""
