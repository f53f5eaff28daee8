"""The API's route handlers, grouped by resource."""
