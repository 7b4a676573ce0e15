"""An async view and a sync form view (Django runs the sync one in a thread under ASGI)."""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


async def index(request: HttpRequest) -> HttpResponse:
    return render(request, "index.html", {"server": request.META.get("SERVER_SOFTWARE", "")})


class MessageForm(forms.Form):
    name = forms.CharField(max_length=50)
    message = forms.CharField(widget=forms.Textarea)


def message(request: HttpRequest) -> HttpResponse:
    form = MessageForm(request.POST) if request.method == "POST" else MessageForm()
    if form.is_valid():
        return render(request, "thanks.html", form.cleaned_data)
    return render(request, "message.html", {"form": form})
