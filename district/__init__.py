"""meal-district: the district server that receives every kiosk's meal events, counts each once, watches the
kiosks, reconciles subsidies district-wide and settles them to the fen (docs/district.md)."""
