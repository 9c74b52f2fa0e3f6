"""Template tags of the progress app: `{% load taskpulse %}`."""
