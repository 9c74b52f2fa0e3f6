"""The Django HTTP side: the API views that progress/urls.py routes."""
