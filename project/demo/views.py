"""The demo page: start the demo task (PROTOCOL.md §7) on each task system the
site enables, and watch them side by side."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from project.demo.systems import demo_choices


@require_GET
@ensure_csrf_cookie
def demo_page(request: HttpRequest) -> HttpResponse:
    return render(request, "demo/index.html", {"systems": demo_choices()})
