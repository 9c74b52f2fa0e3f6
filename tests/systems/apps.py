from django.apps import AppConfig


class SystemsTestConfig(AppConfig):
    name = "tests.systems"
    label = "taskpulse_test_systems"
