"""meal-edge: face-recognition meal check-in at community day-care centres."""
