"""A test app for the Django-Q2 and tasks-framework integrations (tests/test_django_q.py,
tests/test_django_tasks.py): settings enabling every task system as the example
site does (settings.py) and the tasks those tests start (tasks.py)."""
