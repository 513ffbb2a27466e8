"""The JSON shapes of the API: fields.py (the checked field types), requests.py (what the routes accept),
answers.py (what they answer, errors and stream events included)."""
