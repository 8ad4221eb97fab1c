"""The district roster (issue 13): the database side (book), the CSV import, the keys, and the MQTT link."""
