"""Meals: the pure meal and subsidy rules, what the kiosk says, and staff confirmation."""
