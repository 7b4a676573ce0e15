from __future__ import annotations

from django.contrib import admin
from django.urls import path

from mysite import views

urlpatterns = [
    path("", views.index),
    path("message/", views.message),
    path("admin/", admin.site.urls),
]
