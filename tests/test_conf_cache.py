"""progress/conf.py resolves each setting once per process, and again after a change."""

from django.test import override_settings

from progress import conf


def test_changed_setting_is_read_again() -> None:
    """A value resolved before override_settings is not served during it, nor after it."""
    before = conf.history_length()
    with override_settings(TASKPULSE_HISTORY_LENGTH=before + 7):
        assert conf.history_length() == before + 7
    assert conf.history_length() == before
